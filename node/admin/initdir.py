"""``dicom-node init [DIR]``: a commented config.toml and the storage folders to start from.

The text is ``config_template.toml`` (shipped in the package, so it works
outside a checkout); the repository's own ``config.toml`` is that template
with the defaults (a test keeps them identical).  An existing config is
never overwritten.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from ..config import DicomSettings, HttpSettings, Settings, parse

CONFIG_NAME = "config.toml"


def render(
    ae_title: str = DicomSettings.ae_title,
    dicom_host: str = DicomSettings.host,
    dicom_port: int = DicomSettings.port,
    http_port: int = HttpSettings.port,
) -> str:
    """The template with these values filled in (TOML-quoted where needed)."""
    text = resources.files(__package__).joinpath("config_template.toml").read_text(encoding="utf-8")
    return (
        text.replace("@AE_TITLE@", _quoted(ae_title))
        .replace("@DICOM_HOST@", _quoted(dicom_host))
        .replace("@DICOM_PORT@", str(dicom_port))
        .replace("@HTTP_PORT@", str(http_port))
    )


def _quoted(value: str) -> str:
    """*value* as the inside of a TOML basic string."""
    return value.replace("\\", "\\\\").replace('"', '\\"')


def init_dir(folder: Path, **values) -> tuple[Path, Settings]:
    """Write ``folder/config.toml`` and make its storage folders; return (config path, settings).

    Raises ConfigError (naming the key) for a bad value and FileExistsError
    when a config is already there.
    """
    folder = folder.resolve()
    text = render(**values)
    settings = parse(tomllib.loads(text), folder)  # checks the values before anything is written
    path = folder / CONFIG_NAME
    if path.exists():
        raise FileExistsError(f"{path} already exists; not overwritten (edit it, or choose another folder)")
    folder.mkdir(parents=True, exist_ok=True)
    with path.open("x", encoding="utf-8") as fh:  # "x": never overwrite, even if one appeared meanwhile
        fh.write(text)
    for created in (settings.storage.path, settings.storage.database.parent, settings.export.path):
        created.mkdir(parents=True, exist_ok=True)
    return path, settings


def run_init(folder: str, **values) -> int:
    """The command: write the folder (*values* fill the template), say what to do next."""
    path, settings = init_dir(Path(folder), **values)
    print(f"wrote {path}")
    print(f"made {settings.storage.path} (instances, index) and {settings.export.path} (ZIP archives)")
    print(f"start the node with: dicom-node serve --config {path}")
    return 0
