#!/usr/bin/env bash
# Installs the offline datasets lowdiff uses (Debian packages). Idempotent.
set -u
need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ -f /usr/share/fonts/truetype/noto/NotoColorEmoji.ttf ] || need+=(fonts-noto-color-emoji)
[ -f /usr/share/unicode/emoji/emoji-test.txt ] || need+=(unicode-data)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "lowdiff: datasets not installed: ${need[*]}." >&2
    echo "  On Debian/Ubuntu run as root: apt-get install ${need[*]}" >&2
    echo "  (tests do not need them; training on Fashion-MNIST does)." >&2
    exit 0
fi
apt-get update -qq >/dev/null 2>&1 || true
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null \
    || echo "lowdiff: apt-get install ${need[*]} failed; install them by hand to train on real data." >&2
exit 0
