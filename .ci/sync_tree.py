"""Mirrors a checkout into a directory that stays put between CI runs, writing only the files
whose content changed: cargo decides what to rebuild from paths and modification times, so a
fresh clone in a new folder (new path, every file just written) would rebuild every crate of
the workspace, while the mirror rebuilds only what the change touched.

usage: sync_tree.py SOURCE MIRROR
"""

import os
import shutil
import sys

# Not part of the tree: build outputs, tools and data that live beside the sources.
SKIP = {".git", "target", ".venv", "data", "node_modules", ".aws-sam", "corpus", "artifacts"}


def files(root):
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in SKIP]
        for name in filenames:
            path = os.path.join(dirpath, name)
            out[os.path.relpath(path, root)] = path
    return out


def same(a, b):
    if os.path.getsize(a) != os.path.getsize(b):
        return False
    with open(a, "rb") as fa, open(b, "rb") as fb:
        return fa.read() == fb.read()


def main(source, mirror):
    wanted = files(source)
    present = files(mirror) if os.path.isdir(mirror) else {}
    written = 0
    for rel, src in wanted.items():
        dst = os.path.join(mirror, rel)
        if rel in present and same(src, dst) and os.access(src, os.X_OK) == os.access(dst, os.X_OK):
            continue
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
        os.utime(dst)  # now: newer than anything built from the old content
        written += 1
    removed = 0
    for rel in present.keys() - wanted.keys():
        os.remove(present[rel])
        removed += 1
    print(f"mirror {mirror}: {written} files written, {removed} removed, {len(wanted) - written} unchanged")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
