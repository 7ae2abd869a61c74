"""Where the estimators' weights (controlnet_aux's annotator files) are found on this machine.

The files are those of the lllyasviel/Annotators hub repository, kept side by side under their own names
(`dpt_hybrid-midas-501f0c75.pt`, `sk_model.pth`, ...), in the first of these folders that holds all of an
estimator's files:
1. `<root>/annotators/` in each model root (the artist's --models-dir first, then the server's own models folder);
2. `<root>/../custom_nodes/comfyui_controlnet_aux/ckpts/lllyasviel/Annotators/`: where ComfyUI's
   comfyui_controlnet_aux node downloads them, beside the `models/` folder given as --models-dir;
3. the Hugging Face hub cache (a previous download of lllyasviel/Annotators).
Nothing found and the hub not switched off (HF_HUB_OFFLINE): the files are downloaded from the hub into its cache.
"""
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

ANNOTATORS = "lllyasviel/Annotators"
FOLDER = "annotators"
COMFY_CKPTS = Path("custom_nodes", "comfyui_controlnet_aux", "ckpts", *ANNOTATORS.split("/"))


def search_folders(roots: Iterable) -> List[Path]:
    """The local folders looked in, in order (whether they exist or not)."""
    places: List[Path] = []
    for root in roots:
        root = Path(root)
        for place in (root / FOLDER, root.parent / COMFY_CKPTS):
            if place not in places:
                places.append(place)
    return places


def find_local(files: Sequence[str], roots: Iterable) -> Optional[Path]:
    """The first local folder (search_folders) holding every one of `files`, else the hub cache's snapshot of
    lllyasviel/Annotators holding them all, else None. Only looks at the disk."""
    for folder in search_folders(roots):
        if all((folder / name).is_file() for name in files):
            return folder
    return _hub_cache_folder(files)


def hub_offline() -> bool:
    """True when the hub must not be asked (HF_HUB_OFFLINE=1)."""
    from huggingface_hub import constants
    is_offline = getattr(constants, "is_offline_mode", None)
    return bool(is_offline() if is_offline is not None else constants.HF_HUB_OFFLINE)


def hub_cache() -> Path:
    from huggingface_hub import constants
    return Path(constants.HF_HUB_CACHE)


def download(files: Sequence[str]) -> Path:
    """Fetch `files` from the hub into its cache; the snapshot folder holding them (OSError when that fails:
    offline, no such file, ...)."""
    from huggingface_hub import hf_hub_download
    paths = [Path(hf_hub_download(ANNOTATORS, name)) for name in files]
    return paths[0].parent


def _hub_cache_folder(files: Sequence[str]) -> Optional[Path]:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    folders = set()
    for name in files:
        try:
            found = try_to_load_from_cache(ANNOTATORS, name)
        except Exception:  # noqa: BLE001 - an unreadable cache is a cache without the file
            return None
        if not isinstance(found, str):
            return None
        folders.add(Path(found).parent)
    return folders.pop() if len(folders) == 1 else None
