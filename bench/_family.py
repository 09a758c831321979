"""Which CPU family this machine is, and where a bench's results for that family live.

Speed depends on the CPU family (an Intel Xeon with AMX and an AMD EPYC with AVX-512
BF16 rank the same code differently), so each bench writes its table to
``bench/results/<family>/<name>.md``: a session on one family adds or replaces that
family's table and never erases another's. ``bench/readme_tables.py`` shows every
family's table, each under its label.
"""

from __future__ import annotations

from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"

# slug → label, most specific first; a machine matching none is "other-<vendor>".
FAMILIES = {
    "intel-amx": "Intel Xeon with AMX (AVX-512, AMX-BF16/INT8)",
    "intel-avx512": "Intel with AVX-512, no AMX",
    "amd-avx512-bf16": "AMD EPYC with AVX-512 BF16, no AMX",
    "amd-avx2": "AMD with AVX2, no AVX-512",
}
# Tables kept from before the benches named the CPU: shown after every family, written by no bench.
UNRECORDED = "cpu-not-recorded"
UNRECORDED_LABEL = "CPU not recorded (measured before the benches named the CPU)"


def _cpuinfo() -> tuple[str, set[str]]:
    """(vendor_id, flags) of the first CPU in /proc/cpuinfo (empty where there is none)."""
    vendor, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "vendor_id" and not vendor:
                vendor = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    return vendor, flags


def cpu_family() -> str:
    """This machine's family slug (a key of ``FAMILIES``, or ``other-<vendor>``)."""
    vendor, flags = _cpuinfo()
    if vendor == "GenuineIntel":
        return "intel-amx" if "amx_bf16" in flags else "intel-avx512" if "avx512f" in flags else "other-intel"
    if vendor == "AuthenticAMD":
        return "amd-avx512-bf16" if "avx512_bf16" in flags else "amd-avx2" if "avx2" in flags else "other-amd"
    return f"other-{vendor.lower() or 'unknown'}"


def family_label(slug: str) -> str:
    """The heading a family's tables are shown under."""
    return UNRECORDED_LABEL if slug == UNRECORDED else FAMILIES.get(slug, slug)


def family_order(slugs: list[str]) -> list[str]:
    """``slugs`` in the order tables are shown: ``FAMILIES`` order, then others by name, unrecorded last."""
    known = [slug for slug in FAMILIES if slug in slugs]
    others = sorted(slug for slug in slugs if slug not in FAMILIES and slug != UNRECORDED)
    return known + others + [slug for slug in slugs if slug == UNRECORDED]


def cpu_line() -> str:
    """This machine's CPU model and family, as each bench's header names them."""
    from atrous.devices import cpu_name  # imports torch: not before a bench has set OpenMP's policy

    return f"{cpu_name()}, family: {family_label(cpu_family())}"


def results_path(name: str, family: str | None = None) -> Path:
    """``bench/results/<family>/<name>.md`` for this machine's family (or ``family``)."""
    return RESULTS / (family or cpu_family()) / f"{name}.md"


def write_result(text: str, out: Path | None) -> None:
    """Print a bench's result ``text`` and, unless ``out`` is None (a smoke run), write it there."""
    print("\n" + text)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text)
        print(f"wrote {out}")
