"""Build index.html, the page of `dvc plots show/diff`, with vega, vega-lite and vega-embed inlined.

    python .dvc/html/build.py    # needs npm and the npm registry; run after changing package.json

It installs exactly the packages of package-lock.json (`npm ci` checks each one's integrity
hash) in a temp folder, inlines their minified builds into index.html, so the charts draw with
no network from any output folder, and writes the licenses of every installed package to
LICENSES.txt. Both are committed: using the page needs no npm. Same lock, same bytes.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUILDS = {"vega": "build/vega.min.js", "vega-lite": "build/vega-lite.min.js", "vega-embed": "build/vega-embed.min.js"}
# dvc_render fills the page with str.replace of these; none may occur in the inlined code
DVC_PLACEHOLDERS = ("{scripts}", "{plot_divs}", "{refresh_tag}")

# DVC's default page (dvc_render/html.py) without {scripts}, which would add the CDN's <script src>.
PAGE = """<!DOCTYPE html>
<!-- Built by .dvc/html/build.py from package-lock.json (@VERSIONS@): rebuild it, do not edit. -->
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
@LIBRARIES@
    <script>
        // SVG rather than canvas by default, so every mark is an element of the page
        window.vegaEmbed = ((embed) => Object.assign(
            (el, spec, options) => embed(el, spec, {renderer: "svg", ...options}), embed))(window.vegaEmbed);
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def inline(name: str, code: str) -> str:
    """One <script> element holding `code`, the minified build of package `name`."""
    code = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", code)  # the map is not shipped
    if re.search(r"</script", code, re.IGNORECASE):
        sys.exit(
            f"error: {name}'s {BUILDS[name]} holds '</script', which would end the inline script; "
            f"pin another version in {HERE / 'package.json'}"
        )
    for placeholder in DVC_PLACEHOLDERS:
        if placeholder in code:
            sys.exit(
                f"error: {name}'s {BUILDS[name]} holds {placeholder}, which dvc would replace; "
                f"pin another version in {HERE / 'package.json'}"
            )
    return f"    <script>/* {name} */\n{code.rstrip()}\n    </script>"


def licenses(modules: Path, lock: dict) -> str:
    """Every installed package's license file (the bundles hold code of most of them), by name."""
    parts = []
    for key, entry in sorted(lock["packages"].items()):
        folder = modules.parent / key
        if not key or not folder.is_dir():  # the root, or an optional package for another platform
            continue
        files = sorted(p for p in folder.iterdir() if re.match(r"(licen[cs]e|copying)", p.name, re.IGNORECASE))
        text = (
            "\n".join(p.read_text(encoding="utf8").strip() for p in files) or "(the npm package holds no license file)"
        )
        parts.append(
            f"{key.removeprefix('node_modules/')} {entry['version']} "
            f"({entry.get('license', 'no license field')})\n\n{text}\n"
        )
    header = (
        "Licenses of the npm packages installed from package-lock.json, whose code index.html holds\n"
        "(the minified builds bundle their dependencies). Where a package holds no license file,\n"
        "the license named in its package.json is given.\n"
    )
    return f"{'=' * 72}\n".join([header, *parts])


def main() -> None:
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("error: npm not found on PATH; install Node.js (e.g. apt-get install -y npm) and run again")
    lock = json.loads((HERE / "package-lock.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("package.json", "package-lock.json"):
            shutil.copy2(HERE / name, tmp)
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund"], cwd=tmp, check=True)
        modules = Path(tmp) / "node_modules"
        versions = {name: lock["packages"][f"node_modules/{name}"]["version"] for name in BUILDS}
        scripts = [inline(name, (modules / name / path).read_text(encoding="utf8")) for name, path in BUILDS.items()]
        page = PAGE.replace("@VERSIONS@", ", ".join(f"{n} {v}" for n, v in versions.items()))
        (HERE / "index.html").write_text(page.replace("@LIBRARIES@", "\n".join(scripts)), encoding="utf8")
        (HERE / "LICENSES.txt").write_text(licenses(modules, lock), encoding="utf8")
    print(f"wrote {HERE / 'index.html'} and {HERE / 'LICENSES.txt'}")


if __name__ == "__main__":
    main()
