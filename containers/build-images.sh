#!/usr/bin/env bash
# Build the pipeline and serving images into the local podman store (make images) and write
# what was built to out/images.json: each image's reference, id, digest reference and size.
#
#   BASE_IMAGE   the base both start from; default: the one containers/build-base-image.sh
#                makes from Debian's packages (built first when missing). On a machine that
#                reaches a registry, BASE_IMAGE=python:3.11.7-slim-bookworm uses the upstream one.
#   IMAGE_PREFIX default localhost/hospital-mlops (images: $IMAGE_PREFIX/pipeline, …/serving)
#   IMAGE_TAG    default 0.1.0
#   BUILD_CA     a CA bundle for a TLS-inspecting proxy, given to the builds as a secret
#                (default: the machine's /etc/ssl/certs/ca-certificates.crt when present)
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/containers/containers.conf}"
LOCAL_BASE=localhost/hospital-mlops/base-python:3.11-bookworm
BASE_IMAGE="${BASE_IMAGE:-$LOCAL_BASE}"
IMAGE_PREFIX="${IMAGE_PREFIX:-localhost/hospital-mlops}"
IMAGE_TAG="${IMAGE_TAG:-0.1.0}"
BUILD_CA="${BUILD_CA:-/etc/ssl/certs/ca-certificates.crt}"
OUT="${IMAGES_OUT:-$ROOT/out/images.json}"
mkdir -p "$(dirname "$OUT")"

containers/install-engine.sh
[ "$BASE_IMAGE" = "$LOCAL_BASE" ] && containers/build-base-image.sh "$LOCAL_BASE"

sha="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
dirty=true
[ "$sha" != unknown ] && [ -z "$(git status --porcelain --untracked-files=no)" ] && dirty=false
source_url="$(git remote get-url origin 2>/dev/null || echo unknown)"
args=(--network host --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "HMLOPS_GIT_SHA=$sha"
      --build-arg "HMLOPS_GIT_DIRTY=$dirty" --build-arg "HMLOPS_SOURCE=$source_url")
# buildah's layer cache keys ENV and LABEL on their text before the build args are expanded, so
# `ENV HMLOPS_GIT_SHA=${HMLOPS_GIT_SHA}` came from the cache with the previous commit's SHA.
# --env and --label set them on the image itself, after the cache.
args+=(--env "HMLOPS_GIT_SHA=$sha" --env "HMLOPS_GIT_DIRTY=$dirty"
       --label "org.opencontainers.image.revision=$sha" --label "org.opencontainers.image.source=$source_url")
[ -s "$BUILD_CA" ] && args+=(--secret "id=build-ca,src=$BUILD_CA")

declare -A built
for name in pipeline serving; do
    dockerfile=components/Dockerfile
    [ "$name" = serving ] && dockerfile=serving/Dockerfile
    ref="$IMAGE_PREFIX/$name:$IMAGE_TAG"
    start=$(date +%s%N)
    log="$(dirname "$OUT")/images-build-$name.log"
    if ! podman build -f "$dockerfile" "${args[@]}" -t "$ref" . >"$log" 2>&1; then
        tail -25 "$log" >&2
        echo "error: building $ref failed (the whole log: $log)" >&2
        exit 1
    fi
    millis=$(( ($(date +%s%N) - start) / 1000000 ))
    built[$name]="$ref $millis"
    echo "built $ref in $(( millis / 1000 )) s"
done

python3 - "$OUT" "$BASE_IMAGE" "$sha" "$dirty" "${built[pipeline]}" "${built[serving]}" <<'PY'
import json, subprocess, sys
out, base, sha, dirty = sys.argv[1:5]
images = {}
for name, spec in zip(("pipeline", "serving"), sys.argv[5:7]):
    ref, millis = spec.split()
    info = json.loads(subprocess.run(["podman", "image", "inspect", ref], check=True,
                                     capture_output=True, text=True).stdout)[0]
    digests = [d for d in info.get("RepoDigests") or [] if d.startswith(ref.rsplit(":", 1)[0] + "@")]
    images[name] = {"ref": ref, "id": info["Id"], "digest_ref": digests[0] if digests else None,
                    "size_bytes": info["Size"], "build_seconds": round(int(millis) / 1000, 1)}
json.dump({"base_image": base, "git_sha": sha, "dirty": dirty == "true", "images": images},
          open(out, "w"), indent=2)
print(f"wrote {out}")
for name, i in images.items():
    print(f"  {name:9} {i['digest_ref']}  {i['size_bytes'] / 1e6:.0f} MB")
PY
