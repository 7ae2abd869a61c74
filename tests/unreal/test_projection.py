"""Projection onto the level: the camera maths the projector material runs, the decal's set-up through the
recording stand-in, and end to end against a real server (project, re-project, hidden from the next capture,
one-click removal)."""

import math

import pytest

from controlbridge_unreal import camera_math, engine_projection, naming, plugin, projection
from test_end_to_end import pump_until_finished, started  # noqa: F401 - the fixture


def cam(rotation=(-10.0, 30.0, 0.0), hfov=90.0):
    return camera_math.cine_camera_view("/Game/Map:Cam", "Cam 1", (100.0, 50.0, 170.0), rotation, 36.0, 24.0,
                                        18.0 if hfov == 90.0 else 35.0, actor=None)


def along(view, forward, right=0.0, up=0.0):
    x, y, z = camera_math.rotator_axes(view.rotation)
    return tuple(view.location[i] + forward * x[i] + right * y[i] + up * z[i] for i in range(3))


def test_a_point_lands_where_the_camera_saw_it():
    view = cam()
    plan = projection.plan_projection(view, 1.5, 5000.0)
    assert projection.project_point(plan, along(view, 700.0)) == pytest.approx((0.5, 0.5))
    # hfov 90: at 700 cm the view is 1400 cm wide and 1400 / 1.5 cm high
    corner = along(view, 700.0, right=699.3, up=699.3 / 1.5)                              # just inside the corner
    assert projection.project_point(plan, corner) == pytest.approx((0.9995, 0.0005))
    assert projection.project_point(plan, along(view, 700.0, right=-350.0, up=-350.0 / 1.5)) == pytest.approx(
        (0.25, 0.75))
    assert projection.project_point(plan, along(view, -700.0)) is None                  # behind the camera
    assert projection.project_point(plan, along(view, 700.0, right=800.0)) is None       # outside the view


def test_the_decal_box_holds_the_frustum_out_to_the_reach():
    view = cam()
    plan = projection.plan_projection(view, 1.5, 5000.0)
    tan_h = math.tan(math.radians(45.0))
    assert plan.decal_size == pytest.approx((2500.0, 5000.0 * tan_h, 5000.0 * tan_h / 1.5))
    assert plan.rotation == view.rotation and plan.label == "CB_Projection_Cam_1"
    for f in (1.0, 2500.0, 4999.0):
        for sr, su in ((1, 1), (-1, 1), (1, -1), (-1, -1)):
            corner = along(view, f, right=sr * f * tan_h * 0.999, up=su * f * tan_h / 1.5 * 0.999)
            assert projection.inside_box(plan, corner) and projection.project_point(plan, corner) is not None
    assert not projection.inside_box(plan, along(view, 5100.0))
    with pytest.raises(ValueError):
        projection.plan_projection(view, 1.5, 0.0)


def test_the_material_code_is_the_tested_maths():
    # the HLSL names every parameter the plan sets, samples the image and returns the in-view mask as alpha
    code = projection.PROJECTOR_HLSL
    for name in ("P", "CamPos", "CamForward", "CamRight", "CamUp", "TanHalfH", "TanHalfV", "Image", "ImageSampler"):
        assert name in code
    plan = projection.plan_projection(cam(), 1.5, 5000.0)
    assert set(plan.vectors) | set(plan.scalars) == {"CamPos", "CamForward", "CamRight", "CamUp", "TanHalfH",
                                                     "TanHalfV"}
    assert "0.5 - dot(d, CamUp)" in code and "0.5 + dot(d, CamRight)" in code   # v grows downwards, as in the image


def test_projection_set_up_replacement_and_removal(fake_editor):
    editor, ue = fake_editor
    texture = ue.Texture2D(name="T_CB_Cam_1_abc")
    view = cam()
    plan = projection.plan_projection(view, 1.5, 5000.0)
    level_before = list(editor.level)
    decal = engine_projection.project(ue, plan, texture)

    spawn, = editor.calls_named("EditorActorSubsystem.spawn_actor_from_class")
    assert spawn.args[0] is ue.DecalActor and spawn.kwargs == {"transient": True}     # never saved with the level
    assert decal.label == "CB_Projection_Cam_1" and projection.PROJECTION_TAG in decal.tags
    assert decal.decal._props["decal_size"] == ue.Vector(*plan.decal_size)
    dynamic = decal.decal._props["decal_material"]
    assert isinstance(dynamic, ue.MaterialInstanceDynamic)
    assert dynamic.textures["Image"] is texture and dynamic.scalars == pytest.approx(plan.scalars)
    assert dynamic.vectors["CamPos"] == ue.LinearColor(r=100.0, g=50.0, b=170.0, a=0.0)

    # the projector material: a deferred decal, every input of its code connected, mask into opacity
    material = editor.assets[naming.object_path(naming.MATERIAL_DIR, projection.MATERIAL_NAME)]
    assert dynamic.parent is material
    assert material._props["material_domain"] is ue.MaterialDomain.MD_DEFERRED_DECAL
    custom, = [e for e in material.expressions if isinstance(e, ue.MaterialExpressionCustom)]
    names = [str(i._props["input_name"]) for i in custom._props["inputs"]]
    assert sorted(names) == sorted(custom._props["connected"])
    assert custom._props["code"] == projection.PROJECTOR_HLSL
    props = [c.args[2] for c in editor.calls_named("MaterialEditingLibrary.connect_material_property")]
    assert ue.MaterialProperty.MP_OPACITY in props and ue.MaterialProperty.MP_EMISSIVE_COLOR in props

    engine_projection.project(ue, plan, texture)                      # again from the same camera: replaced
    assert len(engine_projection.find_projections(ue)) == 1 and decal not in editor.level
    other = projection.plan_projection(camera_math.viewport_view((0, 0, 100), (0, 0, 0), 90.0), 1.0, 1000.0)
    engine_projection.project(ue, other, texture)
    assert len(engine_projection.find_projections(ue)) == 2
    assert len(editor.calls_named("AssetTools.create_asset")) == 1  # the material is made once
    assert engine_projection.remove_projections(ue) == 2 and editor.level == level_before


def test_project_the_result_and_remove_it_in_one_click(started):
    editor, ue, server, p = started
    plugin.project_result()                                          # nothing generated yet
    assert "Nothing to project yet" in editor.messages[-1]
    camera = editor.add_cine_camera(label="Shot 030")
    level_before = list(editor.level)
    plugin.generate_from_cine_camera()
    assert pump_until_finished(editor, 0).finished is True
    plugin.project_result()
    decal, = engine_projection.find_projections(ue)
    texture_path = p.engine.last_result[3]
    assert decal.decal._props["decal_material"].textures["Image"] is editor.assets[texture_path]
    assert decal.label == "CB_Projection_Shot_030" and decal.transient

    editor.selected = [camera]
    plugin.generate_from_cine_camera()                               # the next capture does not see the projection
    assert decal in editor.captures[-1]["hidden"]
    assert pump_until_finished(editor, 1).finished is True

    plugin.remove_projections()                                      # one click
    assert engine_projection.find_projections(ue) == []
    plane, = [a for a in editor.level if a not in level_before]      # only the result plane remains
    assert isinstance(plane, ue.StaticMeshActor) and len(editor.messages) == 1
