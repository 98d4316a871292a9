#!/usr/bin/env bash
# Builds a free-threaded CPython 3.13 (configure --disable-gil) from Debian's
# own python3.13 source package in trixie, and installs it into a cache
# directory that outlives the run:
#
#   ${SNAKEPIT_CACHE:-$HOME/.cache/snakepit}/python3.13t/bin/python3.13t
#
# The last line on stdout is the interpreter's path; progress goes to stderr.
# When that interpreter already exists and really runs without the GIL, the
# script prints the path and does nothing else (no network, no apt).
#
# The source is fetched with apt-get under a private configuration (its own
# sources list, lists and cache in a temporary directory) derived from the
# machine's Debian archive entry; the machine's apt sources and state are
# never changed. Missing build tools and headers are installed with the
# machine's normal apt-get when run as root. See docs/free-threaded-python.md.
set -euo pipefail

src_suite=trixie          # the Debian release whose python3.13 we build
src_package=python3.13
build_packages=(gcc make libc6-dev pkg-config dpkg-dev xz-utils
  libffi-dev libssl-dev zlib1g-dev libbz2-dev liblzma-dev)

say() { echo "python-ft: $*" >&2; }
die() { echo "python-ft: $*" >&2; exit 1; }

[ -n "${SNAKEPIT_CACHE:-}" ] || [ -n "${HOME:-}" ] || die "set SNAKEPIT_CACHE (or HOME)"
cache=${SNAKEPIT_CACHE:-$HOME/.cache/snakepit}
name=python3.13t
prefix=$cache/$name
python=$prefix/bin/python3.13t
log=$cache/$name-build.log

# True when $python exists, was built with --disable-gil and runs without
# the GIL. -I keeps PYTHON* variables (PYTHON_GIL among them) out of it.
ready() {
  [ -x "$python" ] && "$python" -I -c '
import sys, sysconfig
ok = sysconfig.get_config_var("Py_GIL_DISABLED") == 1 and not sys._is_gil_enabled()
sys.exit(0 if ok else 1)' >/dev/null 2>&1
}

if ready; then
  echo "$python"
  exit 0
fi

mkdir -p "$cache"
exec 9>"$cache/$name.lock"
if ! flock -n 9; then
  say "another build holds $cache/$name.lock; waiting for it"
  flock 9
fi
if ready; then # built by whoever held the lock
  echo "$python"
  exit 0
fi

command -v apt-get >/dev/null || die "needs apt-get (Debian or a derivative)"

# Leftovers of a build that was killed (we hold the lock, so none is live).
rm -rf "$cache/.$name-work."* "$prefix.old."*

# ---------------------------------------------------------------- build deps
missing=()
for p in "${build_packages[@]}"; do
  st=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
  [ "$st" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    die "missing build packages; run as root: apt-get install ${missing[*]}"
  fi
  say "installing ${missing[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -qq "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

started=$SECONDS
work=$(mktemp -d "$cache/.$name-work.XXXXXX")
trap 'rm -rf "$work"' EXIT
echo "== start $(date -u +%T)" >"$log"

# ------------------------------------------------- private apt configuration
# The machine's main Debian archive entry is the enabled entry whose suite is
# a release name (no -security, -updates, -backports part), not on a CD-ROM,
# and, where apt already knows that suite's Release file, of Origin Debian;
# the machine's own codename wins ties. Its URIs and Signed-By are reused for
# a deb-src entry for $src_suite.
sources_list=/etc/apt/sources.list sources_parts=/etc/apt/sources.list.d/
eval "$(apt-config shell sources_list Dir::Etc::SourceList/f sources_parts Dir::Etc::SourceParts/d)"
# shellcheck disable=SC1091
codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}") || codename=

# "URI SUITE ORIGIN" for each index apt has fetched, e.g.
# "http://mirror/debian bookworm Debian".
apt_origins=$(apt-cache policy 2>/dev/null | awk '
  $1 ~ /^-?[0-9]+$/ && $NF == "Packages" { uri = $2; sub(/\/+$/, "", uri); split($3, s, "/"); cur = uri " " s[1]; next }
  $1 == "release" && cur != "" {
    origin = "-"; n = split($2, f, ",")
    for (k = 1; k <= n; k++) if (f[k] ~ /^o=/) origin = substr(f[k], 3)
    print cur " " origin; cur = ""
  }' | sort -u)

# One line per (entry, suite): URIS<TAB>SUITE<TAB>SIGNED-BY, URIS separated by
# spaces; an embedded Signed-By key has its lines joined by \x1f.
list_entries() {
  local f
  for f in "$sources_list" "$sources_parts"*.list; do
    [ -f "$f" ] || continue
    awk '
      { sub(/#.*/, "") }
      $1 != "deb" && $1 != "deb-src" { next }
      {
        signed = ""; i = 2
        if ($2 ~ /^\[/) {
          opts = ""
          for (; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } }
          gsub(/[][]/, "", opts)
          n = split(opts, o, " ")
          for (k = 1; k <= n; k++) if (o[k] ~ /^signed-by=/) signed = substr(o[k], 11)
        }
        if (i + 1 <= NF) print $i "\t" $(i + 1) "\t" signed
      }' "$f"
  done
  for f in "$sources_parts"*.sources; do
    [ -f "$f" ] || continue
    awk '
      function trim(s) { gsub(/^[ \t]+|[ \t]+$/, "", s); return s }
      function flush(   n, s, k) {
        if (types ~ /(^| )deb(-src)?( |$)/ && tolower(enabled) != "no" && uris != "") {
          n = split(suites, s, " ")
          for (k = 1; k <= n; k++) print uris "\t" s[k] "\t" signed
        }
        types = uris = suites = signed = enabled = field = ""
      }
      /^#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[ \t]/ {
        if (field == "signed-by") { line = $0; sub(/^[ \t]/, "", line); signed = signed "\037" line }
        else if (field == "uris") uris = trim(uris " " trim($0))
        else if (field == "suites") suites = trim(suites " " trim($0))
        next
      }
      {
        field = tolower(substr($0, 1, index($0, ":") - 1))
        value = trim(substr($0, index($0, ":") + 1))
        if (field == "types") types = value
        else if (field == "uris") uris = value
        else if (field == "suites") suites = value
        else if (field == "signed-by") signed = value
        else if (field == "enabled") enabled = value
      }
      END { flush() }' "$f"
  done
}

# Candidates, best first: score<TAB>uris<TAB>signed-by.
candidates=()
while IFS=$'\t' read -r uris suite signed; do
  [[ -z $suite || $suite == */* || $suite == *-* || $uris == *cdrom:* ]] && continue
  score=1
  for u in $uris; do
    origin=$(awk -v p="${u%/} $suite" '$1 " " $2 == p { print $3; exit }' <<<"$apt_origins")
    case $origin in
      "") ;;                              # apt has not fetched it: unknown
      Debian) score=3 ;;
      *) continue 2 ;;                    # some other archive
    esac
  done
  [ -n "$codename" ] && [ "$suite" = "$codename" ] && score=$((score + 1))
  candidates+=("$score"$'\t'"$uris"$'\t'"$signed")
done < <(list_entries)
[ ${#candidates[@]} -gt 0 ] || die "found no Debian archive entry in $sources_list or ${sources_parts}*"
mapfile -t candidates < <(printf '%s\n' "${candidates[@]}" | sort -t $'\t' -s -k1,1nr | awk '!seen[$0]++')

fail() {
  say "$1; last lines of $log:"
  tail -n 40 "$log" >&2
  exit 1
}

apt_dir=$work/apt
mkdir -p "$apt_dir/parts" "$apt_dir/cache/archives/partial"
apt_opts=(
  -o "Dir::Etc::SourceList=$apt_dir/sources.sources"
  -o "Dir::Etc::SourceParts=$apt_dir/parts"
  -o "Dir::State::Lists=$apt_dir/lists"
  -o "Dir::Cache=$apt_dir/cache"
  -o "APT::Sandbox::User=$(id -un)"
)

# Writes the private deb-src list for one candidate and fetches its index.
# Succeeds only when apt verified the signature and the Release file says
# Origin: Debian; nothing apt cannot verify is ever used.
try_candidate() {
  local uris=$1 signed=$2 out=$work/update.log rc=0
  rm -rf "$apt_dir/lists"
  mkdir -p "$apt_dir/lists/partial"
  {
    echo "Types: deb-src"
    echo "URIs: $uris"
    echo "Suites: $src_suite"
    echo "Components: main"
    if [ -n "$signed" ]; then
      printf 'Signed-By: %s\n' "${signed//$'\037'/$'\n' }"
    fi
  } >"$apt_dir/sources.sources"
  { echo "== private sources list"; cat "$apt_dir/sources.sources"; } >>"$log"
  apt-get "${apt_opts[@]}" update >"$out" 2>&1 || rc=$?
  cat "$out" >>"$log"
  [ "$rc" = 0 ] || return 1
  grep -qE 'NO_PUBKEY|EXPKEYSIG|not signed|GPG error|signatures? (were|was) invalid' "$out" && return 1
  grep -qsx 'Origin: Debian' "$apt_dir"/lists/*Release
}

fetch_index() {
  local c score uris signed
  for c in "${candidates[@]}"; do
    IFS=$'\t' read -r score uris signed <<<"$c"
    if try_candidate "$uris" "$signed"; then
      say "using $uris for $src_suite"
      return 0
    fi
  done
  return 1
}

say "fetching the $src_suite source index (private apt lists)"
if ! fetch_index; then
  # A bookworm machine whose debian-archive-keyring predates the trixie keys:
  # the current bookworm package carries them. Upgrade it once and retry.
  if [ "$(id -u)" = 0 ] && grep -qE 'NO_PUBKEY|EXPKEYSIG' "$log"; then
    say "the archive keyring does not know $src_suite's key; upgrading debian-archive-keyring"
    export DEBIAN_FRONTEND=noninteractive
    { apt-get update -qq && apt-get install -y -qq --only-upgrade debian-archive-keyring; } >>"$log" 2>&1 || true
    fetch_index || fail "no Debian archive entry gave a verified $src_suite deb-src index"
  else
    fail "no Debian archive entry gave a verified $src_suite deb-src index (a keyring too old for $src_suite? as root: apt-get install debian-archive-keyring)"
  fi
fi
say "fetching Debian's $src_package source"
mkdir "$work/src"
(cd "$work/src" && apt-get "${apt_opts[@]}" source --download-only "$src_package") >>"$log" 2>&1 ||
  fail "apt-get source $src_package failed"
dsc=$(ls "$work"/src/*.dsc)
version=$(awk '$1 == "Version:" { print $2; exit }' "$dsc")

# dpkg-source checks every file against the checksums in the .dsc (whose own
# checksums apt checked against the signed Release file) and applies Debian's
# patches, which include its security fixes.
(cd "$work/src" && dpkg-source -x "$dsc" tree) >>"$log" 2>&1 || fail "dpkg-source -x failed"

# ---------------------------------------------------------------------- build
say "building $src_package $version with --disable-gil (a few minutes; log: $log)"
stage=$work/stage
(
  cd "$work/src/tree"
  echo "== configure $(date -u +%T)"
  ./configure --disable-gil --prefix="$prefix" --without-ensurepip --disable-test-modules
  echo "== make $(date -u +%T)"
  make -j"$(nproc)"
  echo "== make install $(date -u +%T)"
  make install DESTDIR="$stage"
  echo "== done $(date -u +%T)"
) >>"$log" 2>&1 || fail "build failed"

echo "Debian source package $src_package $version ($src_suite), configure --disable-gil" \
  >"$stage$prefix/SOURCE"
built=$stage$prefix/bin/python3.13t
"$built" -I -c 'import sys, sysconfig; sys.exit(0 if sysconfig.get_config_var("Py_GIL_DISABLED") == 1 and not sys._is_gil_enabled() else 1)' \
  >>"$log" 2>&1 || fail "the new interpreter does not run without the GIL"

# Move the finished tree into place: $prefix only ever appears complete.
if [ -e "$prefix" ]; then
  mv -T "$prefix" "$prefix.old.$$"
fi
mv -T "$stage$prefix" "$prefix"
rm -rf "$prefix.old.$$"

ready || fail "installed $python does not run without the GIL"
say "built in $((SECONDS - started))s"
echo "$python"
