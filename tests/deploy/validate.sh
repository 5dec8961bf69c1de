#!/usr/bin/env bash
# tests/deploy/validate.sh — offline validation of everything under deploy/.
#
#   bash tests/deploy/validate.sh
#
# Needs no Docker engine, no cluster and no network beyond the package
# registries (only for the first run's installs). It installs, only if missing:
#   - Debian's docker-compose (1.29) to parse deploy/docker-compose.yml;
#   - PyPI's kubernetes-validate (pinned) to check deploy/k8s against the
#     Kubernetes OpenAPI schemas it ships (strict: unknown fields rejected);
#   - hadolint, only if Debian packages it (bookworm does not).
# Then it runs the consistency checks of tests/deploy/deploy_checks.py (what a
# schema cannot see: ports, grace periods, memory budget, names, the runtime
# image's contents) and a self-test proving those checks fail on broken copies.
#
# One line per check (PASS/FAIL/SKIP); the last line is
#   deploy: N passed, M failed[, K skipped]
# and the exit code is non-zero when any check failed.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

# Kubernetes versions to validate against: the oldest we support and the
# newest the pinned kubernetes-validate ships schemas for.
K8S_VERSIONS=${K8S_VERSIONS:-"1.30.0 1.37.0"}
KUBERNETES_VALIDATE_PIN=${KUBERNETES_VALIDATE_PIN:-kubernetes-validate==1.37.0}
PYTHON=${PYTHON:-python3}

PASSED=0
FAILED=0
SKIPPED=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

pass() { echo "PASS: $1"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL: $1${2:+ -- $2}"; FAILED=$((FAILED + 1)); }
skip() { echo "SKIP: $1${2:+ -- $2}"; SKIPPED=$((SKIPPED + 1)); }

# run_check NAME COMMAND...: one PASS/FAIL line; on failure the output's tail.
run_check() {
    local name=$1 rc=0
    shift
    "$@" >"$WORK/out" 2>&1 || rc=$?
    if [ "$rc" -eq 0 ]; then
        pass "$name"
    else
        fail "$name" "exit $rc"
        tail -n 30 "$WORK/out" | sed 's/^/    | /'
    fi
    return 0
}

# run_group GROUP: the PASS/FAIL/SKIP lines of deploy_checks.py GROUP, counted.
run_group() {
    local group=$1 out rc=0 n
    out=$("$PYTHON" tests/deploy/deploy_checks.py "$group" "$ROOT" 2>&1) || rc=$?
    [ -n "$out" ] && printf '%s\n' "$out"
    n=$(grep -c '^PASS: ' <<<"$out" || true)
    PASSED=$((PASSED + n))
    n=$(grep -c '^FAIL: ' <<<"$out" || true)
    FAILED=$((FAILED + n))
    n=$(grep -c '^SKIP: ' <<<"$out" || true)
    SKIPPED=$((SKIPPED + n))
    if [ "$rc" -ne 0 ]; then
        fail "deploy_checks.py $group ran" "exit $rc"
    fi
    return 0
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n "$@"
    else
        echo "need root for: $*" >&2
        return 1
    fi
}

apt_install() {
    # Try the install first; refresh the package lists only if that fails.
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -q --no-install-recommends "$@" \
        || { as_root apt-get update -q && as_root apt-get install -y -q --no-install-recommends "$@"; }
}

# --------------------------------------------------------------- installs

if command -v docker-compose >/dev/null 2>&1; then
    pass "docker-compose present ($(docker-compose version --short 2>/dev/null || echo unknown))"
elif apt_install docker-compose >"$WORK/apt.log" 2>&1 && command -v docker-compose >/dev/null 2>&1; then
    pass "docker-compose installed from Debian ($(docker-compose version --short 2>/dev/null || echo unknown))"
else
    fail "docker-compose install (apt-get install docker-compose)"
    tail -n 20 "$WORK/apt.log" | sed 's/^/    | /'
fi

if "$PYTHON" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
    pass "kubernetes-validate present ($("$PYTHON" -m kubernetes_validate --version 2>/dev/null))"
else
    pip_user=()
    if [ -z "${VIRTUAL_ENV:-}" ] && ! "$PYTHON" -c \
        'import os, sys, sysconfig; sys.exit(0 if os.access(sysconfig.get_paths()["purelib"], os.W_OK) else 1)'; then
        pip_user=(--user)
    fi
    if "$PYTHON" -m pip install -q --disable-pip-version-check "${pip_user[@]}" "$KUBERNETES_VALIDATE_PIN" \
        >"$WORK/pip.log" 2>&1 && "$PYTHON" -c 'import kubernetes_validate, yaml' >/dev/null 2>&1; then
        pass "kubernetes-validate installed from PyPI ($KUBERNETES_VALIDATE_PIN)"
    else
        fail "kubernetes-validate install (pip install $KUBERNETES_VALIDATE_PIN)"
        tail -n 20 "$WORK/pip.log" | sed 's/^/    | /'
    fi
fi

# ---------------------------------------------------------------- compose

if command -v docker-compose >/dev/null 2>&1; then
    run_check "compose: docker-compose -f deploy/docker-compose.yml config -q" \
        docker-compose -f deploy/docker-compose.yml config -q
    run_check "compose: config -q with --env-file deploy/.env.example" \
        docker-compose --env-file deploy/.env.example -f deploy/docker-compose.yml config -q
    run_check "compose: --profile backfill config lists the backfill service" \
        bash -c 'docker-compose -f deploy/docker-compose.yml --profile backfill config --services | grep -qx backfill'
else
    fail "compose: docker-compose config" "docker-compose not available"
fi
if docker compose version >/dev/null 2>&1; then
    run_check "compose: docker compose (v2) config -q" docker compose -f deploy/docker-compose.yml config -q
else
    skip "compose: docker compose (v2) config" "compose v2 plugin not installed"
fi

if "$PYTHON" -c 'import yaml' >/dev/null 2>&1; then
    run_group compose
else
    fail "compose: consistency checks" "PyYAML missing"
fi

# -------------------------------------------------------------------- k8s

mapfile -t MANIFESTS < <(find deploy/k8s -maxdepth 1 -type f \( -name '*.yaml' -o -name '*.yml' \) \
    ! -name 'kustomization.yaml' ! -name 'kustomization.yml' | sort)
if [ "${#MANIFESTS[@]}" -eq 0 ]; then
    fail "k8s: manifests found in deploy/k8s"
elif "$PYTHON" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    for v in $K8S_VERSIONS; do
        run_check "k8s: kubernetes-validate --strict -k $v on ${#MANIFESTS[@]} manifests" \
            "$PYTHON" -m kubernetes_validate --strict --quiet -k "$v" "${MANIFESTS[@]}"
    done
else
    fail "k8s: kubernetes-validate" "not available"
fi

# Render the kustomization too, when a kustomize is at hand (kubectl has one).
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    KUSTOMIZE=(kubectl kustomize deploy/k8s)
elif command -v kustomize >/dev/null 2>&1; then
    KUSTOMIZE=(kustomize build deploy/k8s)
else
    KUSTOMIZE=()
fi
if [ "${#KUSTOMIZE[@]}" -gt 0 ] && "$PYTHON" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    last_v=${K8S_VERSIONS##* }
    run_check "k8s: ${KUSTOMIZE[*]} renders, output valid (--strict -k $last_v)" \
        bash -c '"$@" >"'"$WORK"'/rendered.yaml" && '"$PYTHON"' -m kubernetes_validate --strict --quiet -k '"$last_v"' "'"$WORK"'/rendered.yaml"' \
        _ "${KUSTOMIZE[@]}"
else
    skip "k8s: kustomize render" "neither kubectl nor kustomize installed"
fi

if "$PYTHON" -c 'import yaml' >/dev/null 2>&1; then
    run_group k8s
else
    fail "k8s: consistency checks" "PyYAML missing"
fi

# ------------------------------------------------------------- Dockerfile

HADOLINT=""
if command -v hadolint >/dev/null 2>&1; then
    HADOLINT=hadolint
else
    candidate=$(apt-cache policy hadolint 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ] \
        && apt_install hadolint >"$WORK/apt-hadolint.log" 2>&1 && command -v hadolint >/dev/null 2>&1; then
        HADOLINT=hadolint
    fi
fi
if [ -n "$HADOLINT" ]; then
    # DL3008: apt versions are deliberately not pinned (security updates of the base release).
    run_check "dockerfile: hadolint deploy/Dockerfile" "$HADOLINT" --ignore DL3008 deploy/Dockerfile
else
    skip "dockerfile: hadolint" "not installed and not packaged by this Debian release; scripted lint below"
fi
run_group dockerfile

# -------------------------------------------------------------- self-test

run_group selftest

# ---------------------------------------------------------------- summary

summary="deploy: $PASSED passed, $FAILED failed"
if [ "$SKIPPED" -gt 0 ]; then
    summary="$summary, $SKIPPED skipped"
fi
echo "$summary"
[ "$FAILED" -eq 0 ]
