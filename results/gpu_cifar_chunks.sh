#!/usr/bin/env bash
# Carry the CIFAR-10 archive to a GPU lease in pieces. A lease carries at most 64 MiB of working
# tree (the repository's tracked files, 7.3 MB, count too) and has no network; the archive is
# 168.6 MB and already compressed (gzip gains nothing), so it travels in three calls to the same
# warm machine, each carrying one piece.
#   here:       [PIECE=55M] bash results/gpu_cifar_chunks.sh split [ARCHIVE]
#               -> .gpu_cifar1 ... .gpu_cifar3 (≤ 55 MiB each; add /.gpu_cifar*/ to .git/info/exclude),
#                  the archive's SHA-256 in each
#   each call:  carry [".gpu_cifarN"], command `bash results/gpu_cifar_chunks.sh keep` (moves the piece
#               to /tmp/hesig-cifar, which stays while the machine stays warm: call again within 30 s)
#   last call:  bash results/gpu_cifar_chunks.sh join .gpu/data   (-> .gpu/data/cifar10/cifar10.npz,
#               refused unless the SHA-256 of the joined archive is the one recorded at split time)
set -euo pipefail
cd "$(dirname "$0")/.."
STORE=/tmp/hesig-cifar
case ${1:-} in
  split)
    archive=${2:-${HESIG_DATA:?set HESIG_DATA or name the archive}/cifar10/cifar10.npz}
    sum=$(sha256sum "$archive" | cut -d' ' -f1)
    tmp=$(mktemp -d)
    split -b "${PIECE:-55M}" -d -a 1 "$archive" "$tmp/cifar10.npz.part"
    n=0
    rm -rf .gpu_cifar[0-9]*/
    for part in "$tmp"/cifar10.npz.part*; do
      n=$((n + 1)); mkdir ".gpu_cifar$n"
      mv "$part" ".gpu_cifar$n/"; echo "$sum" > ".gpu_cifar$n/SHA256"
    done
    rmdir "$tmp"; echo "$n pieces of $archive (sha256 $sum): .gpu_cifar1 ... .gpu_cifar$n";;
  keep)
    mkdir -p "$STORE"; shopt -s nullglob
    for dir in .gpu_cifar*/; do cp "$dir"cifar10.npz.part* "$dir"SHA256 "$STORE/"; done
    ls -l "$STORE";;
  join)
    dest=${2:?name the data folder}/cifar10
    mkdir -p "$dest"
    cat "$STORE"/cifar10.npz.part* > "$dest/cifar10.npz.tmp"
    if [[ $(sha256sum "$dest/cifar10.npz.tmp" | cut -d' ' -f1) != $(cat "$STORE/SHA256") ]]; then
      rm -f "$dest/cifar10.npz.tmp"; echo "error: the joined CIFAR-10 archive does not match its SHA-256 (a piece is missing?)" >&2; exit 1
    fi
    mv "$dest/cifar10.npz.tmp" "$dest/cifar10.npz"; echo "joined $dest/cifar10.npz";;
  *) echo "usage: bash results/gpu_cifar_chunks.sh split [ARCHIVE] | keep | join DATA_FOLDER" >&2; exit 2;;
esac
