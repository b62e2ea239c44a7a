"""Checks what `sam build` left: every function of template.yaml has its directory with an
executable ELF `bootstrap`, and prints each one's size and its size zipped as `sam deploy`
uploads it, and which are over the 8 MiB size target (issue 20: reported, not yet met by
every function, so not a failure). Fails when a function's bootstrap is missing or is not
an executable ELF file.
Usage: check-functions.py BUILD_DIR"""

import io
import sys
import zipfile
from pathlib import Path

TARGET = 8 * 1024 * 1024  # bytes: a binary this small is read and mapped quickly on a cold start


def functions(template: Path) -> list[str]:
    """The logical ids of the template's functions, read without a YAML library (the
    template's own tags, such as !Ref, would need one that knows them)."""
    names, current = [], None
    for line in template.read_text().splitlines():
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            current = line.strip().rstrip(":")
        elif line.strip() == "Type: AWS::Serverless::Function" and current:
            names.append(current)
    return names


def zipped(binary: Path) -> int:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.write(binary, "bootstrap")
    return len(out.getvalue())


def main() -> int:
    build = Path(sys.argv[1])
    names = functions(Path("template.yaml"))
    if not names:
        print("no functions found in template.yaml", file=sys.stderr)
        return 1
    failed = False
    print(f"{'function':<24}{'bootstrap MiB':>14}{'zipped MiB':>12}")
    for name in names:
        binary = build / name / "bootstrap"
        if not binary.is_file():
            print(f"{name}: no bootstrap at {binary}", file=sys.stderr)
            failed = True
            continue
        head = binary.read_bytes()[:4]
        if head != b"\x7fELF" or not binary.stat().st_mode & 0o111:
            print(f"{name}: {binary} is not an executable ELF file", file=sys.stderr)
            failed = True
            continue
        size = binary.stat().st_size
        over = "  over the 8 MiB target" if size > TARGET else ""
        print(f"{name:<24}{size / 2**20:>14.2f}{zipped(binary) / 2**20:>12.2f}{over}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
