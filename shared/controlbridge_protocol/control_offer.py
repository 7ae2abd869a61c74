"""What a server offers for the ControlNet kinds a DCC lets the artist switch on, read from its welcome, so that
both add-ons tell the artist the same thing ("not on this server") before a job is sent. The server checks again.

A kind is on a server when its default model has that ControlNet (`capabilities.controlnets`), or when its library
has a ControlNet file for it: a plain one whose name says the kind (as the server picks them), or a union
(ControlNet++) one whose family has the kind as a mode (`control.union_modes`; the mode defaults to the kind).
Maps a DCC cannot render (lineart, softedge) come from an estimator the server runs on the colour image.
"""
from typing import List, Optional

from .settings import JobSettings

# The kinds the add-ons offer, in panel order; where each one's map comes from is the server's default input:
# depth and normal are the DCC's passes, canny edges and tile use the colour, lineart and softedge are estimated.
DCC_KINDS = ("depth", "canny", "normal", "lineart", "softedge", "tile")
ESTIMATED_KINDS = ("lineart", "softedge")
# Estimator name -> the kind of map it makes, for servers that list estimators by name only (their
# imaging/estimators.py); an entry given as {"name", "role"} says it itself.
ESTIMATOR_KINDS = {"midas": "depth", "zoe": "depth", "depth_anything": "depth", "lineart": "lineart",
                   "lineart_anime": "lineart", "softedge": "softedge", "hed": "softedge", "pidinet": "softedge",
                   "normalbae": "normal", "openpose": "openpose", "mlsd": "mlsd"}


def _control(caps) -> dict:
    return getattr(caps, "control", None) or {}


def _entries(caps) -> List[dict]:
    return list((getattr(caps, "library", None) or {}).get("controlnet") or [])


def _families(entry: dict) -> List[str]:
    return list(entry.get("families") or ([entry["family"]] if entry.get("family") else []))


def controlnet_files(caps, kind: str) -> List[str]:
    """The library ControlNets that can act as `kind`: plain ones whose file name says it, union ones in that mode."""
    modes = _control(caps).get("union_modes") or {}
    names = []
    for entry in _entries(caps):
        name = str(entry.get("name", ""))
        if entry.get("variant") == "union":
            if any(kind in (modes.get(f) or ()) for f in _families(entry)):
                names.append(name)
        elif kind in name.lower():
            names.append(name)
    return names


def is_union(caps, model: Optional[str]) -> bool:
    return any(e.get("name") == model and e.get("variant") == "union" for e in _entries(caps))


def estimators_for(caps, kind: str) -> List[str]:
    """The estimators this server runs that make `kind` maps, in the server's order."""
    names = []
    for entry in _control(caps).get("estimators") or []:
        if isinstance(entry, dict):
            name, role = str(entry.get("name", "")), entry.get("role") or entry.get("kind")
        else:
            name, role = str(entry), None
        if (role or ESTIMATOR_KINDS.get(name)) == kind:
            names.append(name)
    return names


def fill_estimators(settings: JobSettings, caps) -> JobSettings:
    """`settings` with each `estimate` entry left empty ("the server's choice") naming this server's first estimator
    for that kind; an entry the server has none for stays empty and `problems` names it."""
    if caps is None or all(settings.estimate.values()):
        return settings
    return settings.replace(estimate={kind: name or next(iter(estimators_for(caps, kind)), "")
                                      for kind, name in settings.estimate.items()})


def kind_available(caps, kind: str) -> bool:
    """Whether the server can run a `kind` ControlNet at all (its model's own, or one from its library)."""
    return kind in (getattr(caps, "controlnets", None) or []) or bool(controlnet_files(caps, kind))


def problems(settings: JobSettings, caps) -> List[str]:
    """One line per ControlNet or estimator in `settings` that this server does not have (empty: all there).
    A job on another model than the server's default is left to the server (its ControlNets differ)."""
    if caps is None:
        return []
    out = []
    own = list(getattr(caps, "controlnets", None) or [])
    default = getattr(caps, "default_model", "") or ""
    library = {str(e.get("name")) for e in _entries(caps)}
    for name, cn in settings.controlnets.items():
        if cn.model is not None:
            if cn.model not in library:
                out.append(f"the server's library has no ControlNet '{cn.model}' (for {name})")
        elif (settings.model in (None, default)) and own and name not in own:
            files = controlnet_files(caps, name)
            hint = f"; choose one of its library's: {', '.join(files)}" if files else ""
            out.append(f"the server's model has no {name} ControlNet{hint}")
    offered = [str(e.get("name") if isinstance(e, dict) else e) for e in _control(caps).get("estimators") or []]
    for name, estimator in settings.estimate.items():
        if not estimator:
            out.append(f"the server has no estimator for {name} maps (it offers: {', '.join(offered) or 'none'})")
        elif estimator not in offered:
            out.append(f"the server has no {estimator} estimator for {name} "
                       f"(it offers: {', '.join(offered) or 'none'})")
    return out
