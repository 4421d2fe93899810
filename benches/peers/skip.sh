# Sourced by the peers' scripts: `skip MESSAGE` ends the script with exit 77 after a loud line
# naming the peer ($peer, set by the caller); `need TOOL...` skips when a tool is missing.

skip() {
    echo "" >&2
    echo "!!! SKIPPED: ${peer:-a} benchmark peer unavailable: $*" >&2
    echo "!!! (exit 77; the ${peer:-peer} comparison will not run)" >&2
    echo "" >&2
    exit 77
}

need() {
    local tool
    for tool in "$@"; do
        command -v "$tool" >/dev/null 2>&1 || skip "'$tool' not found on PATH"
    done
}
