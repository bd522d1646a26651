"""Build the Blender add-on's zip (what `make addon` runs, and the add-on test too).

Usage: python3 scripts/build_addon.py OUT.zip

The zip holds the `corral_submit/` folder, as Blender's "Install from disk" expects. Its
entries are sorted and dated 1980-01-01, so the same sources always give the same bytes.
"""

import os
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = "corral_submit"


def sources():
    """The add-on's files, relative to addon/, without caches."""
    base = os.path.join(ROOT, "addon")
    found = []
    for folder, dirs, files in os.walk(os.path.join(base, PACKAGE)):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__" and not d.startswith("."))
        for name in files:
            if name.endswith((".pyc", ".pyo")) or name.startswith("."):
                continue
            found.append(os.path.relpath(os.path.join(folder, name), base))
    return sorted(found)


def build(out):
    files = sources()
    if os.path.join(PACKAGE, "__init__.py") not in files:
        sys.exit("build_addon: addon/%s/__init__.py is missing" % PACKAGE)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    # Written beside the target, then renamed: a failed build never leaves half a zip.
    tmp = out + ".tmp"
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
        for rel in files:
            info = zipfile.ZipInfo(rel.replace(os.sep, "/"), date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            with open(os.path.join(ROOT, "addon", rel), "rb") as f:
                archive.writestr(info, f.read())
    os.replace(tmp, out)
    print("built %s (%d files)" % (out, len(files)))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python3 scripts/build_addon.py OUT.zip")
    build(sys.argv[1])
