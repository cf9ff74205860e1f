"""Data kept as a folder of files, for every kind that reads one (images, audio, video): which files count, and how
top-level sub-folders become classes. A flat folder holds unlabelled data; a folder with both class sub-folders and
files at its top level is an error, since it is not clear which labels those files should have."""

from __future__ import annotations

from pathlib import Path

from genlab.errors import DataError


def files_under(folder: Path, suffixes: tuple[str, ...]) -> list[Path]:
    """The files under `folder` whose suffix (in any case) is one of `suffixes`, recursively and sorted; hidden files
    and files in hidden folders (a name starting with ".") are left out."""
    return sorted(f for f in folder.rglob("*") if f.suffix.lower() in suffixes and f.is_file()
                  and not any(part.startswith(".") for part in f.relative_to(folder).parts))


def folder_classes(folder: Path, files: list[Path], noun: str, unlabelled: str) -> list[str]:
    """The class names, sorted: the top-level sub-folders of `folder` that hold any of `files`; [] when all lie at the
    top level. Both at once is a DataError that names `noun` (what the files are: "images") and what a flat folder
    gives (`unlabelled`: "unlabelled clips")."""
    classes = sorted({f.relative_to(folder).parts[0] for f in files if f.parent != folder})
    loose = [f for f in files if f.parent == folder]
    if classes and loose:
        raise DataError(f"{folder}: has class sub-folders ({', '.join(classes[:5])}) and also {noun} at the top "
                        f"level (e.g. {loose[0].name}); move each of them into a class sub-folder, or keep a flat "
                        f"folder for {unlabelled}")
    return classes


def folder_labels(folder: Path, files: list[Path], classes: list[str]) -> list[int]:
    """Each file's label: the index in `classes` of the top-level sub-folder that holds it."""
    index = {name: i for i, name in enumerate(classes)}
    return [index[f.relative_to(folder).parts[0]] for f in files]
