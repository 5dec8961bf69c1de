#!/usr/bin/env bash
# tests/deploy/validate.sh — offline validation of everything under deploy/.
#
#   bash tests/deploy/validate.sh
#
# Needs no Docker engine, no cluster and no network beyond the package
# registries (only for the first run's installs). It installs, only if missing:
#   - Debian's docker-compose (1.29) to parse deploy/docker-compose.yml;
#   - PyPI's kubernetes-validate (pinned) to check deploy/k8s and
#     deploy/k8s-examples against the Kubernetes OpenAPI schemas it ships
#     (strict: unknown fields rejected; CRD kinds have no schema there and are
#     checked by deploy_checks.py instead);
#   - Debian's prometheus package for promtool, to check the alerting rules of
#     deploy/k8s/monitoring and run their unit tests (prometheus-rules.test.yaml);
#   - hadolint, only if Debian packages it (bookworm does not).
# kubectl (or kustomize), when installed, renders every kustomization too.
# Then it runs the consistency checks of tests/deploy/deploy_checks.py (what a
# schema cannot see: ports, grace periods, memory budget, names, the runtime
# image's contents, the metrics the binary exports, the docs' commands) and a
# self-test proving those checks fail on broken copies.
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

apt_candidate() {
    local candidate
    candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    if [ -z "$candidate" ] || [ "$candidate" = "(none)" ]; then
        as_root apt-get update -q >/dev/null 2>&1 || true
        candidate=$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')
    fi
    [ -n "$candidate" ] && [ "$candidate" != "(none)" ]
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

PROMTOOL=""
if command -v promtool >/dev/null 2>&1; then
    PROMTOOL=promtool
    pass "promtool present ($(promtool --version 2>&1 | head -n 1))"
elif ! command -v apt-get >/dev/null 2>&1 || ! apt_candidate prometheus; then
    skip "promtool install" "Debian's prometheus package is not installable here; alerting rules checked structurally only"
elif apt_install prometheus >"$WORK/apt-prometheus.log" 2>&1 && command -v promtool >/dev/null 2>&1; then
    PROMTOOL=promtool
    pass "promtool installed from Debian's prometheus package ($(promtool --version 2>&1 | head -n 1))"
    # Only promtool is wanted: on a systemd host the package also starts a Prometheus
    # server, which this script then stops and disables again.
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
        as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
        echo "    (stopped and disabled the prometheus service the package install started)"
    fi
else
    fail "promtool install (apt-get install prometheus)"
    tail -n 20 "$WORK/apt-prometheus.log" | sed 's/^/    | /'
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

# Manifests of built-in kinds go through the strict schema check; PodMonitor,
# PrometheusRule, ScaledObject and TriggerAuthentication have no schema there.
MANIFESTS=()
if "$PYTHON" -c 'import yaml' >/dev/null 2>&1; then
    mapfile -t MANIFESTS < <("$PYTHON" tests/deploy/deploy_checks.py manifests "$ROOT" 2>"$WORK/crd-files")
fi
if [ "${#MANIFESTS[@]}" -eq 0 ]; then
    fail "k8s: manifests found in deploy/k8s"
elif "$PYTHON" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    for v in $K8S_VERSIONS; do
        run_check "k8s: kubernetes-validate --strict -k $v on ${#MANIFESTS[@]} manifests" \
            "$PYTHON" -m kubernetes_validate --strict --quiet -k "$v" "${MANIFESTS[@]}"
    done
    if [ -s "$WORK/crd-files" ]; then
        skip "k8s: kubernetes-validate on CRD manifests ($(paste -sd ';' "$WORK/crd-files"))" \
            "no schema for these kinds; deploy_checks.py k8s/monitoring check them"
    fi
else
    fail "k8s: kubernetes-validate" "not available"
fi

# Render every kustomization too, when a kustomize is at hand (kubectl has one),
# and validate the built-in kinds of the output.
if command -v kubectl >/dev/null 2>&1 && kubectl kustomize --help >/dev/null 2>&1; then
    KUSTOMIZE=(kubectl kustomize)
elif command -v kustomize >/dev/null 2>&1; then
    KUSTOMIZE=(kustomize build)
else
    KUSTOMIZE=()
fi
if [ "${#KUSTOMIZE[@]}" -gt 0 ] && "$PYTHON" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    last_v=${K8S_VERSIONS##* }
    while IFS= read -r kdir; do
        out="$WORK/rendered-$(tr '/' '_' <<<"$kdir").yaml"
        run_check "k8s: ${KUSTOMIZE[*]} $kdir renders, built-in kinds valid (--strict -k $last_v)" \
            bash -c '"${@:3}" "$1" | "'"$PYTHON"'" tests/deploy/deploy_checks.py builtin-only >"$2" && "'"$PYTHON"'" -m kubernetes_validate --strict --quiet -k "'"$last_v"'" "$2"' \
            _ "$kdir" "$out" "${KUSTOMIZE[@]}" </dev/null
    done < <(find deploy/k8s deploy/k8s-examples -name kustomization.yaml -exec dirname {} \; | sort \
             | while read -r d; do grep -q '^kind: Component' "$d/kustomization.yaml" || echo "$d"; done)
else
    skip "k8s: kustomize render" "neither kubectl nor kustomize installed"
fi

if "$PYTHON" -c 'import yaml' >/dev/null 2>&1; then
    run_group k8s
    run_group render
else
    fail "k8s: consistency checks" "PyYAML missing"
fi

# ------------------------------------------------------------- monitoring

if "$PYTHON" -c 'import yaml' >/dev/null 2>&1; then
    run_group monitoring
fi
if [ -n "$PROMTOOL" ]; then
    mkdir -p "$WORK/rules" "$WORK/rules-broken"
    if "$PYTHON" tests/deploy/deploy_checks.py extract-rules "$WORK/rules/rules.yaml" "$ROOT" >"$WORK/out" 2>&1; then
        cp tests/deploy/prometheus-rules.test.yaml "$WORK/rules/"
        run_check "monitoring: promtool check rules (deploy/k8s/monitoring/prometheusrule.yaml)" \
            "$PROMTOOL" check rules "$WORK/rules/rules.yaml"
        run_check "monitoring: promtool test rules (tests/deploy/prometheus-rules.test.yaml)" \
            bash -c 'cd "$1" && "$2" test rules prometheus-rules.test.yaml' _ "$WORK/rules" "$PROMTOOL"
        # Self-test: the unit tests must notice a changed threshold.
        sed 's|/ 1000) > 180|/ 1000) > 1800|' "$WORK/rules/rules.yaml" >"$WORK/rules-broken/rules.yaml"
        cp tests/deploy/prometheus-rules.test.yaml "$WORK/rules-broken/"
        if cmp -s "$WORK/rules/rules.yaml" "$WORK/rules-broken/rules.yaml"; then
            fail "self-test: promtool unit tests on a broken rules copy" "the mutation did not apply"
        elif (cd "$WORK/rules-broken" && "$PROMTOOL" test rules prometheus-rules.test.yaml) >"$WORK/out" 2>&1; then
            fail "self-test: promtool unit tests fail on rules whose commit-age threshold is 1800s"
        else
            pass "self-test: promtool unit tests fail on rules whose commit-age threshold is 1800s"
        fi
    else
        fail "monitoring: extract the PrometheusRule's rules" "$(tail -n 3 "$WORK/out")"
    fi
else
    skip "monitoring: promtool check rules / test rules" "promtool not available"
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

# ------------------------------------------------------------------- docs

run_group docs

# -------------------------------------------------------------- self-test

run_group selftest

# ---------------------------------------------------------------- summary

summary="deploy: $PASSED passed, $FAILED failed"
if [ "$SKIPPED" -gt 0 ]; then
    summary="$summary, $SKIPPED skipped"
fi
echo "$summary"
[ "$FAILED" -eq 0 ]
