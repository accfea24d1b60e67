# Phases of the stub's service of each event sent to it (domain 1), from `xenalyze --dump-all`,
# for scenario xentrace-profile: PHASE NAME n=COUNT median P90 mean, in µs.
function us(from_s, to_s) { return (to_s - from_s) * 1e6 }
function add(name, v) { n[name]++; val[name, n[name]] = v }
{
    line = $0
    sub(/^[][! ]+/, "", line)
    split(line, f, /[ \t]+/)
    t = f[1] + 0
    rest = line
}
rest ~ /vcpu_wake d1v0/ { if (wake) add("wake-to-wake", us(wake, t)); wake = t; state = 1; guest = 0; exits = 0; next }
state == 1 && rest ~ /runstate_change d1v0 runnable->running/ { run = t; state = 2; next }
state == 2 && rest ~ /d1v0 vmentry/ { entry = t; add("switch-in", us(run, t)); add("wake-to-run", us(wake, run)); state = 3; first = t; next }
state == 3 && rest ~ /d1v0 vmexit/ {
    guest += us(entry, t); exits++
    if (rest ~ /VMMCALL/) { vmcall = t; state = 4; add("guest", guest); add("exits", exits) } else state = 5
    next
}
state == 5 && rest ~ /d1v0 vmentry/ { entry = t; state = 3; next }
state == 4 && rest ~ /d1v0 vcpu_wake d0v/ { add("vmcall-to-notify", us(vmcall, t)); add("event-to-notify", us(wake, t)); state = 6; next }
state == 6 && rest ~ /runstate_change d1v0 running->blocked/ { add("notify-to-block", us(vmcall, t)); state = 0; next }
END {
    for (name in n) {
        m = n[name]
        for (i = 1; i <= m; i++) sorted[i] = val[name, i]
        for (i = 2; i <= m; i++) { x = sorted[i]; j = i - 1; while (j > 0 && sorted[j] > x) { sorted[j + 1] = sorted[j]; j-- } sorted[j + 1] = x }
        s = 0; for (i = 1; i <= m; i++) s += sorted[i]
        p90 = int(m * 0.9); if (p90 < 1) p90 = 1
        printf "PHASE %-18s n=%5d median %8.1f p90 %8.1f mean %8.1f\n", name, m, sorted[int((m + 1) / 2)], sorted[p90], s / m
    }
}
