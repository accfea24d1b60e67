#!/usr/bin/env bash
# Checks that a kernel image is bootable as a Xen PVH guest, as far as the ELF goes:
#   - ELF64 EXEC (fixed addresses; the loaders place PT_LOAD segments at p_paddr),
#   - every PT_NOTE segment has alignment 4 (QEMU mis-parses notes otherwise),
#   - the .note.Xen section lies in a PT_NOTE segment (Xen reads notes from PT_NOTE),
#   - a "Xen" note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY) is present, its 8-byte
#     descriptor equals the ELF entry point, and that address is inside a PT_LOAD segment's
#     physical range (libelf's elf_xen_addr_calc_check).
# Usage: tests/kernel/check-notes.sh IMAGE
# Prints PASS:/FAIL: lines; exits non-zero if any check fails. Needs readelf (binutils),
# which it installs with apt-get when missing and running as root.
set -euo pipefail

if [[ $# -ne 1 ]]; then
    echo "usage: $0 IMAGE" >&2
    exit 2
fi
image=$1
failures=0
pass() { echo "PASS: $*"; }
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

if ! command -v readelf >/dev/null 2>&1; then
    if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        echo "readelf missing: installing binutils"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq binutils >/dev/null
    else
        echo "FAIL: readelf (binutils) is not installed"
        exit 1
    fi
fi
if [[ ! -f $image ]]; then
    echo "FAIL: no such image: $image"
    exit 1
fi

header=$(readelf -hW "$image")
segments=$(readelf -lW "$image")
notes=$(readelf -nW "$image")

if grep -q 'Class:[[:space:]]*ELF64' <<<"$header" && grep -q 'Type:[[:space:]]*EXEC' <<<"$header"; then
    pass "ELF64 EXEC image"
else
    fail "not an ELF64 EXEC image (relocation-model=static missing?)"
fi
entry=$(awk '/Entry point address:/ { print $4 }' <<<"$header")

# Program header lines (readelf -lW): Type Offset VirtAddr PhysAddr FileSiz MemSiz Flg Align;
# Flg may contain a space ("R E"), so Align is taken as the last field.
note_count=0
bad_alignment=0
while read -r _type _rest; do
    note_count=$((note_count + 1))
    align=$(awk '{ print $NF }' <<<"$_type $_rest")
    if [[ $align != 0x4 ]]; then
        bad_alignment=1
        fail "PT_NOTE segment with alignment $align (must be 0x4)"
    fi
done < <(grep -E '^[[:space:]]+NOTE[[:space:]]' <<<"$segments")
if [[ $note_count -eq 0 ]]; then
    fail "no PT_NOTE segment"
elif [[ $bad_alignment -eq 0 ]]; then
    pass "$note_count PT_NOTE segment(s), alignment 0x4"
fi

# Section-to-segment mapping: segment N (counted in program-header order) lists its sections.
note_indexes=$(grep -E '^[[:space:]]+[A-Z_]+[[:space:]]+0x' <<<"$segments" \
    | awk '{ if ($1 == "NOTE") print NR - 1 }')
in_note_segment=0
for index in $note_indexes; do
    if awk -v wanted="$(printf '%02d' "$index")" '
        /Section to Segment mapping/ { mapping = 1; next }
        mapping && $1 == wanted { for (i = 2; i <= NF; i++) if ($i == ".note.Xen") found = 1 }
        END { exit found ? 0 : 1 }' <<<"$segments"; then
        in_note_segment=1
    fi
done
if [[ $in_note_segment -eq 1 ]]; then
    pass ".note.Xen is inside a PT_NOTE segment"
else
    fail ".note.Xen is not inside a PT_NOTE segment"
fi

# The PHYS32_ENTRY note: owner "Xen", type 0x12; older readelf prints "Unknown note type:
# (0x00000012)", newer ones may name it. The descriptor bytes follow on the same line (-W)
# or on the next one.
descriptor=$(awk '
    $1 == "Xen" && ($0 ~ /0x00000012/ || $0 ~ /PHYS32_ENTRY/) {
        if ($0 ~ /description data:/) { sub(/.*description data:[[:space:]]*/, ""); print; exit }
        want = 1; next
    }
    want && /description data:/ { sub(/.*description data:[[:space:]]*/, ""); print; exit }
    want { want = 0 }' <<<"$notes")
if [[ -z $descriptor ]]; then
    fail "no Xen note of type 18 (XEN_ELFNOTE_PHYS32_ENTRY)"
else
    read -r -a bytes <<<"$descriptor"
    if [[ ${#bytes[@]} -ne 8 ]]; then
        fail "PHYS32_ENTRY descriptor has ${#bytes[@]} bytes; QEMU needs 8 (.quad)"
    else
        value=0
        for ((i = 7; i >= 0; i--)); do
            value=$(( (value << 8) | 0x${bytes[i]} ))
        done
        note_entry=$(printf '0x%x' "$value")
        pass "Xen note type 18 (XEN_ELFNOTE_PHYS32_ENTRY) present, entry $note_entry"
        if (( value == entry )); then
            pass "PHYS32 entry equals the ELF entry point ($entry)"
        else
            fail "PHYS32 entry $note_entry differs from the ELF entry point $entry"
        fi
        inside=0
        while read -r _type _offset _virtual physical _file_size memory_size _rest; do
            if (( value >= physical && value < physical + memory_size )); then
                inside=1
            fi
        done < <(grep -E '^[[:space:]]+LOAD[[:space:]]' <<<"$segments")
        if [[ $inside -eq 1 ]]; then
            pass "PHYS32 entry lies inside a PT_LOAD segment"
        else
            fail "PHYS32 entry $note_entry is outside every PT_LOAD segment"
        fi
    fi
fi

if [[ $failures -ne 0 ]]; then
    echo "FAIL: $failures check(s) failed for $image"
    exit 1
fi
echo "PASS: $image has valid Xen PVH notes"
