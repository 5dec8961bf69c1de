#!/usr/bin/env python3
"""Offline consistency checks of deploy/ (called by tests/deploy/validate.sh).

Usage:
  deploy_checks.py GROUP [REPO_ROOT]     GROUP: compose | k8s | monitoring | dockerfile | docs |
                                          render | selftest
  deploy_checks.py manifests [REPO_ROOT] the manifest files whose kinds kubernetes-validate
                                          knows (one per line); CRD files are checked here
  deploy_checks.py builtin-only          stdin YAML -> stdout, documents of built-in kinds only
  deploy_checks.py extract-rules OUT [REPO_ROOT]
                                          the PrometheusRule's spec as a plain rules file

A GROUP prints one line per check, "PASS: <what>", "FAIL: <what> -- <why>" or
"SKIP: <what> -- <why>", and exits 0 (the caller counts the lines). Schema
validation is done elsewhere (docker-compose config, kubernetes-validate,
promtool); these checks cover what a schema cannot: the settings lakewriter
needs, and that the pieces agree with each other and with the binary (its
environment variables are read from src/*.rs, its metrics from
src/metrics.rs, its minimum Rust version from Cargo.toml).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

import yaml

DEFAULT_ADMIN_PORT = 9100          # the binary's default (src/config.rs)
NODE_EXPORTER_PORT = 9100          # what many nodes already run on that port
DEFAULT_SHUTDOWN_TIMEOUT_S = 25.0
DEFAULT_MAX_BUFFER = 128 * 2**20
BACKFILL_DEFAULT_FLUSH_INTERVAL_S = 600.0
# `lakewriter compact`: its peak RSS is bounded (about 300 MB whatever the lake's size),
# and its defaults for the flags the manifests may leave out.
COMPACT_PEAK_RSS = 300 * 10**6
COMPACT_DEFAULTS = {"--target-file-size": "256MiB", "--min-age": "10m", "--grace": "5m",
                    "--work-dir": "/tmp", "--interval": "5m"}
COMPILER_PACKAGES = {
    "gcc", "g++", "cc", "clang", "make", "cmake", "build-essential", "cargo",
    "rustc", "rustup", "pkg-config", "libssl-dev", "zlib1g-dev", "binutils",
}
DEBIAN_RELEASES = {"bookworm": "12", "trixie": "13", "bullseye": "11"}
CRD_GROUPS = ("monitoring.coreos.com", "keda.sh")
SCRAPE_ANNOTATIONS = ("prometheus.io/scrape", "prometheus.io/port", "prometheus.io/path")


class Checker:
    def __init__(self) -> None:
        self.results: list[tuple[bool, str, str]] = []

    def check(self, name: str, ok, why: str = "") -> bool:
        self.results.append((bool(ok), name, why))
        if ok:
            print(f"PASS: {name}")
        else:
            print(f"FAIL: {name} -- {why}")
        return bool(ok)

    def skip(self, name: str, why: str) -> None:
        print(f"SKIP: {name} -- {why}")


# ----------------------------------------------------------------- helpers

_BYTE_UNITS = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "ki": 2**10, "kib": 2**10, "mi": 2**20, "mib": 2**20, "gi": 2**30, "gib": 2**30,
}


def parse_bytes(text: str) -> int:
    """'512Mi' (Kubernetes) or '256MiB' (lakewriter) -> bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _BYTE_UNITS:
        raise ValueError(f"not a byte size: {text!r}")
    return int(float(m.group(1)) * _BYTE_UNITS[m.group(2).lower()])


def parse_seconds(text: str) -> float:
    """'25s', '1m30s', '500ms', '10m', '60' -> seconds."""
    text = str(text).strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    total, pos = 0.0, 0
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        if m.start() != pos:
            raise ValueError(f"not a duration: {text!r}")
        n = float(m.group(1))
        total += {"ms": n / 1000, "s": n, "m": n * 60, "h": n * 3600}[m.group(2)]
        pos = m.end()
    if pos != len(text) or pos == 0:
        raise ValueError(f"not a duration: {text!r}")
    return total


def env_list_to_dict(env) -> dict:
    """Compose `environment:` as a mapping or a list of KEY=VALUE."""
    if env is None:
        return {}
    if isinstance(env, dict):
        return {k: ("" if v is None else str(v)) for k, v in env.items()}
    out = {}
    for item in env:
        k, _, v = str(item).partition("=")
        out[k] = v
    return out


def parse_env_file(path: Path) -> dict:
    """KEY=VALUE lines (kustomize's envs: format); comments and blank lines skipped."""
    out = {}
    for line in path.read_text().splitlines():
        s = line.strip()
        if not s or s.startswith("#"):
            continue
        k, _, v = s.partition("=")
        out[k.strip()] = v
    return out


def load_yaml_docs(path: Path) -> list:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


def compose_default(value: str) -> str:
    """'${VAR:-default}' -> 'default' (what the compose file uses without a .env)."""
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", str(value))


def port_of(addr: str) -> int:
    return int(str(addr).rsplit(":", 1)[1])


def kafka_opts(*strings: str) -> dict:
    out = {}
    for s in strings:
        for item in str(s or "").split(";"):
            if item.strip():
                k, _, v = item.partition("=")
                out[k.strip()] = v.strip()
    return out


def broker_ports(brokers: str) -> list[int]:
    return [int(b.rsplit(":", 1)[1]) for b in str(brokers).split(",") if ":" in b]


def known_lakewriter_env(root: Path) -> set[str]:
    """Every LAKEWRITER_* variable the binary names (clap env = "...", env::var("...")),
    from the sources themselves, so new flags need no change here."""
    names = set()
    for f in sorted((root / "src").glob("**/*.rs")):
        names |= set(re.findall(r'"(LAKEWRITER_[A-Z0-9_]+)"', f.read_text()))
    return names


def exported_metrics(root: Path) -> set[str]:
    """Metric names src/metrics.rs renders (histogram series included)."""
    text = (root / "src" / "metrics.rs").read_text()
    names = {"lakewriter_" + n for n in re.findall(r'put\(\s*"([a-z0-9_]+)"', text)}
    names |= {"lakewriter_" + n for n in re.findall(r'\(\s*"([a-z0-9_]+)",\s*\d+,', text)}
    names |= set(re.findall(r"\b(lakewriter_[a-z0-9_]+)\b", text))
    for n in list(names):
        if re.search(rf"#\s*TYPE {n} histogram", text):
            names |= {n + "_bucket", n + "_sum", n + "_count"}
    return names


def metrics_in(expr: str) -> set[str]:
    return set(re.findall(r"\b(lakewriter_[a-z0-9_]+)\b", expr))


# An image reference: [registry/]path[:tag][@digest].
def split_image(ref: str) -> tuple[str, str | None, str | None]:
    ref = ref.strip()
    digest = None
    if "@" in ref:
        ref, digest = ref.split("@", 1)
    name, tag = ref, None
    last = ref.rsplit("/", 1)[-1]
    if ":" in last:
        name, tag = ref.rsplit(":", 1)
    return name, tag, digest


def tag_is_pinned(name: str, tag: str | None, digest: str | None) -> bool:
    """A digest, or a tag naming one release: x.y.z[...], MinIO's RELEASE.<date>, a
    Debian point release (12.13[-slim]). Not latest, not a bare major or minor (rust:1,
    clickhouse-server:25.8), not untagged."""
    if digest:
        return True
    if not tag or tag == "latest":
        return False
    if re.fullmatch(r"v?\d+\.\d+\.\d+([.\-+][\w.\-]+)?", tag):
        return True
    if re.fullmatch(r"RELEASE\.\d{4}-\d{2}-\d{2}T[\w.\-]+", tag):
        return True
    if name.rsplit("/", 1)[-1] == "debian" and re.fullmatch(r"\d+\.\d+(-slim)?", tag):
        return True
    return False


def full_reference(name: str) -> bool:
    """registry.host[:port]/path: a bare name is pulled from docker.io/library."""
    first = name.split("/", 1)[0]
    return "/" in name and ("." in first or ":" in first or first == "localhost")


# --- the backfill range bounds, as src/offsets.rs parses them (Bound::from_str)

_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})")


def parse_bound(s: str) -> str:
    """'earliest' | 'latest' | RFC 3339 | 'p:o[,p:o...]' -> its kind; ValueError otherwise."""
    s = str(s).strip()
    if s in ("earliest", "latest"):
        return s
    if _RFC3339.fullmatch(s):
        datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00").replace("t", "T"))
        return "time"
    pairs = [p for p in s.split(",") if p.strip()]
    if not pairs:
        raise ValueError(f"{s!r}: empty range bound")
    for pair in pairs:
        p, sep, o = pair.strip().partition(":")
        if not sep:
            raise ValueError(f"{s!r}: expected earliest, latest, an RFC 3339 time or partition:offset[,...]")
        if not re.fullmatch(r"\+?\d+", p) or not re.fullmatch(r"\+?\d+", o):
            raise ValueError(f"bad partition or offset in {pair!r}")
    return "offsets"


def doc_paragraphs(text: str, markdown: bool) -> list[str]:
    """Markdown: blank-line separated blocks. Other files: runs of comment lines, and
    every other line on its own."""
    if markdown:
        return re.split(r"\n\s*\n", text)
    out, cur = [], []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            cur.append(line)
            continue
        if cur:
            out.append("\n".join(cur))
            cur = []
        out.append(line)
    if cur:
        out.append("\n".join(cur))
    return out


def bare_offset_forms(text: str, markdown: bool) -> list[str]:
    """Paragraphs that describe --from/--to forms (they name RFC 3339 times) and offer an
    'offset' that is not partition:offset — a form the parser rejects."""
    bad = []
    for p in doc_paragraphs(text, markdown):
        if "RFC 3339" not in p and "RFC3339" not in p:
            continue
        if re.search(r"(?<!partition:)\boffset\b", p, re.I) or "<offset>" in p:
            bad.append(" ".join(p.split())[:140])
    return bad


# ----------------------------------------------------------------- compose

def compose_services(root: Path) -> tuple[dict, str]:
    path = root / "deploy" / "docker-compose.yml"
    text = path.read_text()
    return yaml.safe_load(text).get("services", {}), text


def check_compose(root: Path, c: Checker) -> None:
    path = root / "deploy" / "docker-compose.yml"
    services, text = compose_services(root)
    known_env = known_lakewriter_env(root)

    required = ["kafka", "kafka-init", "kafka-ui", "minio", "minio-init",
                "clickhouse", "lakewriter", "clickstream"]
    missing = [s for s in required if s not in services]
    c.check("compose: services kafka, kafka-init, kafka-ui, minio, minio-init, clickhouse, "
            "lakewriter, clickstream are defined", not missing, f"missing {missing}")

    kafka = services.get("kafka", {})
    kenv = env_list_to_dict(kafka.get("environment"))
    c.check("compose: kafka is apache/kafka in KRaft mode (broker,controller; no ZooKeeper)",
            "apache/kafka" in str(kafka.get("image", ""))
            and "controller" in kenv.get("KAFKA_PROCESS_ROLES", "")
            and "zookeeper" not in text.lower(),
            f"image={kafka.get('image')!r} roles={kenv.get('KAFKA_PROCESS_ROLES')!r}")
    adv = kenv.get("KAFKA_ADVERTISED_LISTENERS", "")
    c.check("compose: kafka advertises kafka:9092 inside and localhost:<port> to the host",
            "//kafka:9092" in adv and "//localhost:" in adv, f"advertised={adv!r}")

    ui = services.get("kafka-ui", {})
    c.check("compose: kafka-ui is kafbat/kafka-ui (the maintained fork) pointed at kafka:9092",
            compose_default(ui.get("image", "")).startswith("kafbat/kafka-ui:")
            and "kafka:9092" in env_list_to_dict(ui.get("environment")).values(),
            f"image={ui.get('image')!r}")

    # Every image: a release tag or a digest (never :latest, untagged or floating).
    lw_image = services.get("lakewriter", {}).get("image")
    unpinned = []
    for name, svc in services.items():
        if "image" not in svc:
            unpinned.append(f"{name}: no image")
            continue
        if svc.get("image") == lw_image and (svc.get("pull_policy") in ("build", "never")):
            continue  # built locally by the lakewriter service, never pulled
        ref = compose_default(svc["image"])
        if not tag_is_pinned(*split_image(ref)):
            unpinned.append(f"{name}: {ref}")
    env_example = root / "deploy" / ".env.example"
    example = parse_env_file(env_example) if env_example.is_file() else {}
    for k, v in example.items():
        if k.endswith("_IMAGE") and k != "LAKEWRITER_IMAGE" and not tag_is_pinned(*split_image(v)):
            unpinned.append(f".env.example {k}={v}")
    c.check("compose: every pulled image (compose defaults and .env.example) is pinned to a release",
            not unpinned, f"unpinned: {unpinned}")
    minio_refs = [compose_default(services.get(s, {}).get("image", "")) for s in ("minio", "minio-init")]
    c.check("compose: MinIO images come from quay.io (Docker Hub no longer serves minio/*)",
            all(r.startswith("quay.io/minio/") for r in minio_refs), f"{minio_refs}")

    long_running = ["kafka", "minio", "clickhouse", "lakewriter"]
    no_hc = [s for s in long_running if not (services.get(s, {}).get("healthcheck") or {}).get("test")]
    c.check("compose: kafka, minio, clickhouse, lakewriter have healthchecks", not no_hc,
            f"no healthcheck: {no_hc}")

    bad_deps = []
    for name, svc in services.items():
        deps = svc.get("depends_on")
        if deps is None:
            continue
        if isinstance(deps, list):
            bad_deps.append(f"{name}: depends_on without conditions")
            continue
        for dep, spec in deps.items():
            cond = (spec or {}).get("condition")
            target = services.get(dep)
            if target is None:
                bad_deps.append(f"{name} -> unknown service {dep}")
            elif cond not in ("service_healthy", "service_completed_successfully", "service_started"):
                bad_deps.append(f"{name} -> {dep}: condition {cond!r}")
            elif cond == "service_healthy" and not (target.get("healthcheck") or {}).get("test"):
                bad_deps.append(f"{name} -> {dep}: service_healthy but {dep} has no healthcheck")
            elif cond == "service_completed_successfully" and str(target.get("restart", "no")) != "no":
                bad_deps.append(f"{name} -> {dep}: one-shot {dep} must have restart: \"no\"")
    c.check("compose: every depends_on names an existing service with a valid condition",
            not bad_deps, "; ".join(bad_deps))

    uses = {(n, d, (s or {}).get("condition"))
            for n, svc in services.items()
            for d, s in (svc.get("depends_on") or {}).items() if isinstance(svc.get("depends_on"), dict)}
    c.check("compose: start order kafka(healthy) -> kafka-init(completed) -> lakewriter, "
            "minio(healthy) -> minio-init(completed) -> lakewriter/clickhouse",
            {("kafka-init", "kafka", "service_healthy"),
             ("minio-init", "minio", "service_healthy"),
             ("lakewriter", "kafka-init", "service_completed_successfully"),
             ("lakewriter", "minio-init", "service_completed_successfully"),
             ("clickhouse", "minio-init", "service_completed_successfully")} <= uses,
            f"have {sorted(uses)}")

    mc = services.get("minio-init", {})
    mc_cmd = " ".join(map(str, mc.get("command") or [])) if isinstance(mc.get("command"), list) else str(mc.get("command"))
    mc_env = env_list_to_dict(mc.get("environment"))
    c.check("compose: minio-init (minio/mc) creates the bucket `lake` idempotently",
            "minio/mc" in str(mc.get("image", "")) and "mc mb --ignore-existing" in mc_cmd
            and "lake" in mc_env.get("LAKE_BUCKET", ""),
            f"command={mc_cmd!r}")

    # ClickHouse runs sql/ through the init script, never sql/ directly.
    ch = services.get("clickhouse", {})
    ch_env = env_list_to_dict(ch.get("environment"))
    vols = [str(v) for v in ch.get("volumes", [])]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in vols if v.count(":") >= 1}
    initdb_src = mounts.get("/docker-entrypoint-initdb.d")
    sql_target = ch_env.get("LAKE_SQL_DIR", "")
    c.check("compose: clickhouse/clickhouse-server runs sql/ through deploy/clickhouse/initdb "
            "(sql/ at LAKE_SQL_DIR, not at /docker-entrypoint-initdb.d)",
            "clickhouse/clickhouse-server" in str(ch.get("image", ""))
            and initdb_src not in (None, "../sql") and sql_target and mounts.get(sql_target) == "../sql",
            f"volumes={vols} LAKE_SQL_DIR={sql_target!r}")
    c.check("compose: ClickHouse gets the MinIO keys (LAKE_S3_* from MINIO_ROOT_USER/PASSWORD)",
            "MINIO_ROOT_USER" in ch_env.get("LAKE_S3_ACCESS_KEY_ID", "")
            and "MINIO_ROOT_PASSWORD" in ch_env.get("LAKE_S3_SECRET_ACCESS_KEY", ""),
            f"env={ {k: v for k, v in ch_env.items() if k.startswith('LAKE_S3')} }")
    check_clickhouse_init(root, c, path.parent, initdb_src)

    missing_files = []
    for name, svc in services.items():
        for v in svc.get("volumes", []) or []:
            src = str(v).split(":")[0]
            if src.startswith("./") or src.startswith("../"):
                if src == "../sql":
                    continue  # written by the Rust side; may not exist yet
                if not (path.parent / src).exists():
                    missing_files.append(f"{name}: {src}")
    c.check("compose: every bind-mounted file under deploy/ exists", not missing_files,
            f"missing {missing_files}")

    lw = services.get("lakewriter", {})
    build = lw.get("build") or {}
    dockerfile = (path.parent / str(build.get("context", "."))).resolve() / str(build.get("dockerfile", "Dockerfile"))
    c.check("compose: lakewriter builds from context .. with deploy/Dockerfile",
            str(build.get("context")) == ".." and str(build.get("dockerfile")) == "deploy/Dockerfile"
            and dockerfile.is_file(), f"build={build} -> {dockerfile}")

    lenv = env_list_to_dict(lw.get("environment"))
    needed = {
        "LAKEWRITER_MODE": "stream",
        "LAKEWRITER_BROKERS": "kafka:9092",
        "LAKEWRITER_S3_PATH_STYLE": "true",
        "AWS_ENDPOINT_URL": "http://minio:9000",
        "LAKEWRITER_EVENT_TYPE_POINTER": "/event_params/event_type",
        "LAKEWRITER_EVENT_TIME_POINTER": "/event_timestamp_ms/ts_ms",
        "LAKEWRITER_EVENT_TIME_FORMAT": "ms",
    }
    wrong = {k: lenv.get(k) for k, v in needed.items() if lenv.get(k) != v}
    wrong.update({k: None for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
                                    "LAKEWRITER_LAKE", "LAKEWRITER_TOPICS", "LAKEWRITER_GROUP")
                  if not lenv.get(k)})
    c.check("compose: lakewriter runs in stream mode against kafka:9092 and MinIO (path-style) "
            "with the clickstream pointers", not wrong, f"wrong or missing: {wrong}")
    lake = lenv.get("LAKEWRITER_LAKE", "")
    c.check("compose: lakewriter's lake is s3://<bucket>/... of the bucket minio-init creates",
            lake.startswith("s3://") and lake.removeprefix("s3://").split("/")[0] == mc_env.get("LAKE_BUCKET"),
            f"lake={lake!r} bucket={mc_env.get('LAKE_BUCKET')!r}")

    # The lake layout must be the one sql/ (run by ClickHouse's init) reads.
    sql_dir = root / "sql"
    nc_file = sql_dir / "01_named_collection.sql"
    if nc_file.is_file():
        m = re.search(r"\burl\s*=\s*'([^']+)'", nc_file.read_text())
        expected = "http://minio:9000/" + lake.removeprefix("s3://").strip("/") + "/"
        c.check("compose: sql/01_named_collection.sql's url is the lake (LAKEWRITER_LAKE) on minio:9000",
                m is not None and m.group(1) == expected,
                f"sql url={m.group(1) if m else None!r}, compose lake -> {expected!r}")
        dirs = {d for f in sorted(sql_dir.glob("*.sql"))
                for d in re.findall(r"filename\s*=\s*'([^'/]+)/date=", f.read_text())}
        c.check("compose: the table directory sql/ reads is LAKEWRITER_TABLE",
                dirs == {lenv.get("LAKEWRITER_TABLE")},
                f"sql reads {sorted(dirs)}, compose writes {lenv.get('LAKEWRITER_TABLE')!r}")
    else:
        c.skip("compose: lake layout matches sql/", "sql/01_named_collection.sql not written yet")

    ch_user = ch_env.get("CLICKHOUSE_USER", "default")
    users_xml = path.parent / "clickhouse" / "users.d" / "lake-user.xml"
    grants = users_xml.read_text() if users_xml.is_file() else ""
    c.check("compose: the ClickHouse init user may create named collections (sql/ needs it)",
            ch_env.get("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT") in ("1", 1)
            and re.search(rf"<{re.escape(ch_user)}>.*<named_collection_control>1</named_collection_control>",
                          grants, re.S) is not None
            and mounts.get("/etc/clickhouse-server/users.d/lake-user.xml") is not None,
            f"user={ch_user!r}, users.d grants found={bool(grants)}")

    try:
        grace = parse_seconds(lw.get("stop_grace_period", "10s"))
        timeout = parse_seconds(lenv.get("LAKEWRITER_SHUTDOWN_TIMEOUT", str(DEFAULT_SHUTDOWN_TIMEOUT_S)))
        ok, why = grace > timeout, f"stop_grace_period {grace}s <= shutdown timeout {timeout}s"
    except ValueError as e:
        ok, why = False, str(e)
    c.check("compose: lakewriter stop_grace_period exceeds LAKEWRITER_SHUTDOWN_TIMEOUT", ok, why)

    admin = lenv.get("LAKEWRITER_ADMIN_ADDR", f"0.0.0.0:{DEFAULT_ADMIN_PORT}")
    admin_port = port_of(admin)
    published = [compose_default(str(p)) for p in lw.get("ports", [])]
    hc = " ".join(map(str, (lw.get("healthcheck") or {}).get("test", [])))
    c.check("compose: lakewriter's admin port is not node_exporter's 9100, and the healthcheck "
            "(/readyz, no curl/wget) and the published port use it",
            admin_port != NODE_EXPORTER_PORT
            and f"/{admin_port} " in hc + " " and "/readyz" in hc and "curl" not in hc and "wget" not in hc
            and any(p.rsplit(":", 1)[-1] == str(admin_port) for p in published),
            f"LAKEWRITER_ADMIN_ADDR={admin!r} healthcheck={hc!r} ports={published}")

    # Host ports: the compose stack and the test ground (scripts/stack.sh, scripts/bench.sh)
    # must be able to run side by side.
    host_ports = {}
    for name, svc in services.items():
        for p in svc.get("ports", []) or []:
            parts = compose_default(str(p)).split(":")
            if len(parts) >= 2:
                host_ports[int(parts[-2])] = name
    taken = {}
    for script in ("scripts/stack.sh", "scripts/bench.sh"):
        f = root / script
        if f.is_file():
            for var, port in re.findall(r"(LAKEWRITER_[A-Z_]*PORT)[^\n]*:-(\d+)\}", f.read_text()):
                taken[int(port)] = f"{script} {var}"
    clash = {p: (host_ports[p], taken[p]) for p in host_ports if p in taken}
    c.check("compose: published host ports do not collide with scripts/stack.sh's or scripts/bench.sh's",
            bool(taken) and not clash, f"collisions {clash}; test-ground ports {sorted(taken)}")

    gen = services.get("clickstream", {})
    gcmd = gen.get("command") or []
    if isinstance(gcmd, str):
        gcmd = shlex.split(gcmd)
    gflags = {str(x) for x in gcmd if str(x).startswith("--")}
    c.check("compose: clickstream runs `produce` from the lakewriter image with "
            "--brokers --topic --events --rate --partitions --malformed-ratio",
            gcmd[:1] == ["produce"] and gen.get("image") == lw.get("image")
            and {"--brokers", "--topic", "--events", "--rate", "--partitions", "--malformed-ratio"} <= gflags,
            f"command={gcmd} image={gen.get('image')!r}")
    reusers = {n: svc.get("pull_policy") for n, svc in services.items()
               if n != "lakewriter" and svc.get("image") == lw.get("image")}
    c.check("compose: lakewriter builds its image (pull_policy: build); services reusing it never pull",
            lw.get("pull_policy") == "build" and reusers and all(v == "never" for v in reusers.values()),
            f"lakewriter={lw.get('pull_policy')!r} reusers={reusers}")

    unknown = sorted({f"{n}: {k}" for n, svc in services.items()
                      for k in env_list_to_dict(svc.get("environment"))
                      if k.startswith("LAKEWRITER_") and k not in known_env})
    c.check("compose: every LAKEWRITER_* container variable is one the binary reads (src/*.rs)",
            bool(known_env) and not unknown, f"unknown {unknown}")

    bf = env_list_to_dict(services.get("backfill", {}).get("environment"))
    c.check("compose: the backfill profile runs backfill mode into its own table",
            "backfill" in services and bf.get("LAKEWRITER_MODE") == "backfill"
            and bf.get("LAKEWRITER_TABLE") not in (None, lenv.get("LAKEWRITER_TABLE")),
            f"backfill env={bf}")
    c.check("compose: the backfill sets no LAKEWRITER_GROUP (derived from its arguments, "
            "so another range never resumes an old one's progress)",
            "LAKEWRITER_GROUP" not in bf, f"LAKEWRITER_GROUP={bf.get('LAKEWRITER_GROUP')!r}")
    flush = sorted(k for k in bf if k.startswith("LAKEWRITER_FLUSH_"))
    c.check("compose: the backfill sets no LAKEWRITER_FLUSH_* (its own 10 min default applies)",
            not flush, f"{flush}")
    bad_bounds = []
    for k in ("LAKEWRITER_FROM", "LAKEWRITER_TO"):
        for v in filter(None, [compose_default(bf.get(k, ""))]):
            try:
                parse_bound(v)
            except ValueError as e:
                bad_bounds.append(f"{k}: {e}")
    for k in ("BACKFILL_FROM", "BACKFILL_TO"):
        if k in example:
            try:
                parse_bound(example[k])
            except ValueError as e:
                bad_bounds.append(f".env.example {k}: {e}")
    c.check("compose: the backfill's LAKEWRITER_FROM/TO defaults parse as the binary parses them",
            not bad_bounds, f"{bad_bounds}")

    check_compose_compactor(c, services, lw, lenv)

    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    documented = set(example)
    c.check("compose: deploy/.env.example sets every ${VAR} the compose file interpolates, and no other",
            env_example.is_file() and used == documented,
            f"undocumented {sorted(used - documented)}; unused {sorted(documented - used)}")
    unbraced = re.findall(r"(?<!\$)\$\{[A-Za-z_][A-Za-z0-9_]*\}", text)
    c.check("compose: every interpolation has a default (${VAR:-default}), so no .env is required",
            not unbraced, f"without default: {unbraced}")


def check_compose_compactor(c: Checker, services: dict, lw: dict, lenv: dict) -> None:
    comp = services.get("compactor")
    name = ("compose: the compactor runs `compact --interval` from the lakewriter image (never pulled) on the "
            "writer's lake and MinIO (path-style)")
    if comp is None:
        c.check(name, False, "no compactor service")
        return
    cmd = comp.get("command") or []
    if isinstance(cmd, str):
        cmd = shlex.split(cmd)
    cmd = [compose_default(str(x)) for x in cmd]
    flags = cli_flags(cmd)
    env = env_list_to_dict(comp.get("environment"))
    wrong = {k: env.get(k) for k in ("LAKEWRITER_LAKE", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID",
                                     "AWS_SECRET_ACCESS_KEY", "AWS_REGION", "LAKEWRITER_S3_PATH_STYLE")
             if not env.get(k) or env.get(k) != lenv.get(k)}
    c.check(name, cmd[:1] == ["compact"] and "--interval" in flags and "--once" not in flags
            and comp.get("image") == lw.get("image") and comp.get("pull_policy") == "never" and not wrong,
            f"command={cmd} image={comp.get('image')!r} pull_policy={comp.get('pull_policy')!r} "
            f"differs from the writer: {wrong}")
    deps = comp.get("depends_on") or {}
    c.check("compose: the compactor waits for the bucket (minio-init completed) and not for Kafka",
            isinstance(deps, dict)
            and (deps.get("minio-init") or {}).get("condition") == "service_completed_successfully"
            and not {"kafka", "kafka-init"} & set(deps), f"depends_on={deps}")
    try:
        min_age = parse_seconds(str(flags.get("--min-age", COMPACT_DEFAULTS["--min-age"])))
        interval = parse_seconds(compose_default(lenv.get("LAKEWRITER_FLUSH_INTERVAL", "60s")))
        ok, why = min_age > interval, f"--min-age {min_age}s vs the writer's flush interval {interval}s"
    except ValueError as err:
        ok, why = False, str(err)
    c.check("compose: the compactor's --min-age exceeds the writer's LAKEWRITER_FLUSH_INTERVAL", ok, why)
    admin_port = port_of(env.get("LAKEWRITER_ADMIN_ADDR", f"0.0.0.0:{DEFAULT_ADMIN_PORT}"))
    hc = " ".join(map(str, (comp.get("healthcheck") or {}).get("test", [])))
    published = [compose_default(str(p)) for p in comp.get("ports", []) or []]
    c.check("compose: the compactor's healthcheck asks /healthz on its admin port (its /readyz fails while "
            "it sleeps between passes), and the published port is that admin port",
            admin_port != NODE_EXPORTER_PORT and f"/{admin_port} " in hc + " " and "/healthz" in hc
            and "/readyz" not in hc and all(p.rsplit(":", 1)[-1] == str(admin_port) for p in published),
            f"admin port {admin_port} healthcheck={hc!r} ports={published}")


def check_clickhouse_init(root: Path, c: Checker, deploy_dir: Path, initdb_src: str | None) -> None:
    """Run the init script with a stand-in clickhouse-client: the named collection must carry
    the keys from the environment (escaped), and no statement the shipped 'minioadmin'."""
    name = "compose: ClickHouse's init script runs sql/ with the environment's S3 keys in lake_s3"
    scripts = sorted((deploy_dir / initdb_src).glob("*.sh")) if initdb_src and (deploy_dir / initdb_src).is_dir() else []
    if not scripts:
        c.check(name, False, f"no init script (*.sh) in the directory mounted at /docker-entrypoint-initdb.d "
                             f"({initdb_src!r})")
        return
    if not (root / "sql" / "01_named_collection.sql").is_file():
        c.skip(name, "no sql/01_named_collection.sql")
        return
    key, secret = "AKIA-lake&|1", "s'e\\cr\"et$&|"
    with tempfile.TemporaryDirectory() as tmp:
        fake = Path(tmp) / "clickhouse-client"
        fake.write_text('#!/bin/sh\ncat >> "$FAKE_CLICKHOUSE_OUT"\n')
        fake.chmod(0o755)
        out = Path(tmp) / "statements.sql"
        env = dict(os.environ, PATH=f"{tmp}:{os.environ.get('PATH', '')}", FAKE_CLICKHOUSE_OUT=str(out),
                   LAKE_SQL_DIR=str(root / "sql"), LAKE_S3_ACCESS_KEY_ID=key,
                   LAKE_S3_SECRET_ACCESS_KEY=secret, CLICKHOUSE_USER="lake", CLICKHOUSE_PASSWORD="lake")
        proc = subprocess.run(["bash", str(scripts[0])], env=env, capture_output=True, text=True, timeout=60)
        sent = out.read_text() if out.is_file() else ""
    esc = lambda v: "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"  # noqa: E731
    statements = "\n".join(l for l in sent.splitlines() if not l.lstrip().startswith("--"))
    ok = (proc.returncode == 0
          and f"access_key_id = {esc(key)}" in statements
          and f"secret_access_key = {esc(secret)}" in statements
          and "'minioadmin'" not in statements
          and "CREATE NAMED COLLECTION" in statements)
    c.check(name, ok, f"exit {proc.returncode}; stderr {proc.stderr.strip()[-300:]!r}; "
                      f"key statements {[l.strip() for l in statements.splitlines() if 'access_key' in l]}")


# --------------------------------------------------------------------- k8s

def kustomization(dirpath: Path) -> dict:
    for n in ("kustomization.yaml", "kustomization.yml"):
        if (dirpath / n).is_file():
            return yaml.safe_load((dirpath / n).read_text()) or {}
    return {}


def manifest_files(root: Path) -> list[Path]:
    """Every manifest (not kustomization.yaml) under deploy/k8s and deploy/k8s-examples."""
    out = []
    for base in ("deploy/k8s", "deploy/k8s-examples"):
        d = root / base
        if d.is_dir():
            out += [p for p in sorted(d.rglob("*")) if p.suffix in (".yaml", ".yml")
                    and p.name not in ("kustomization.yaml", "kustomization.yml")]
    return out


def is_builtin(doc: dict) -> bool:
    group = str(doc.get("apiVersion", "")).rpartition("/")[0]
    return not any(group == g or group.endswith("." + g) for g in CRD_GROUPS)


def kustomize_images(kust: dict, ref: str) -> str:
    """What kustomize's images: transformer makes of a container image reference."""
    name, tag, digest = split_image(ref)
    for im in kust.get("images", []) or []:
        if im.get("name") == name:
            name = im.get("newName", name)
            if im.get("digest"):
                return f"{name}@{im['digest']}"
            tag = str(im.get("newTag", tag)) if im.get("newTag") is not None else tag
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def pod_spec(obj: dict) -> dict:
    spec = obj["spec"]
    if obj.get("kind") == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]


def pod_spec_or_none(obj: dict) -> dict | None:
    """The pod spec of a workload (Deployment, Job, CronJob, ...); None for other kinds."""
    try:
        spec = pod_spec(obj)
    except (KeyError, TypeError):
        return None
    return spec if isinstance(spec, dict) else None


def pod_template_labels(obj: dict) -> dict:
    spec = obj["spec"]
    if obj.get("kind") == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return (spec["template"].get("metadata") or {}).get("labels") or {}


def cli_flags(args: list) -> dict:
    """['compact', '--once', '--grace=5m', '--min-age', '10m'] -> {'--once': True, '--grace': '5m', ...}."""
    out, i = {}, 0
    args = [str(a) for a in args]
    while i < len(args):
        a = args[i]
        if a.startswith("--"):
            if "=" in a:
                k, _, v = a.partition("=")
                out[k] = v
            elif i + 1 < len(args) and not args[i + 1].startswith("--"):
                out[a] = args[i + 1]
                i += 1
            else:
                out[a] = True
        i += 1
    return out


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a Kubernetes label selector (matchLabels, matchExpressions) selects these labels."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        k, op, vals = e.get("key"), e.get("operator"), e.get("values") or []
        if op == "In" and labels.get(k) not in vals:
            return False
        if op == "NotIn" and k in labels and labels[k] in vals:
            return False
        if op == "Exists" and k not in labels:
            return False
        if op == "DoesNotExist" and k in labels:
            return False
    return True


def compact_cronjobs(root: Path) -> list[dict]:
    """The CronJobs of deploy/k8s/compact's kustomization."""
    cdir = root / "deploy" / "k8s" / "compact"
    ck = kustomization(cdir)
    return [x for r in ck.get("resources", []) or [] if (cdir / str(r)).is_file()
            for x in load_yaml_docs(cdir / str(r)) if x.get("kind") == "CronJob"]


def check_k8s(root: Path, c: Checker) -> None:
    kdir = root / "deploy" / "k8s"
    known_env = known_lakewriter_env(root)
    kust = kustomization(kdir)
    listed = [str(r) for r in kust.get("resources", [])]
    on_disk = sorted(p.name for p in kdir.iterdir()
                     if p.is_file() and p.suffix in (".yaml", ".yml")
                     and p.name not in ("kustomization.yaml", "kustomization.yml"))
    c.check("k8s: kustomization.yaml lists every manifest in deploy/k8s, each once",
            sorted(listed) == on_disk and len(set(listed)) == len(listed),
            f"not listed {sorted(set(on_disk) - set(listed))}; listed but absent "
            f"{sorted(set(listed) - set(on_disk))}")
    c.check("k8s: kustomization.yaml is a kustomize.config.k8s.io Kustomization without a fixed namespace",
            str(kust.get("apiVersion", "")).startswith("kustomize.config.k8s.io/")
            and kust.get("kind") == "Kustomization" and "namespace" not in kust, str(kust.get("apiVersion")))

    objs: dict[str, list] = {}
    namespaced = []
    for name in on_disk:
        for d in load_yaml_docs(kdir / name):
            objs.setdefault(d.get("kind"), []).append(d)
            if (d.get("metadata") or {}).get("namespace"):
                namespaced.append(f"{name}: {d['kind']}")
    for p in manifest_files(root):
        if p.parent != kdir:
            for d in load_yaml_docs(p):
                if (d.get("metadata") or {}).get("namespace"):
                    namespaced.append(f"{p.relative_to(root)}: {d['kind']}")
    c.check("k8s: manifests are namespace-agnostic (no metadata.namespace)", not namespaced,
            f"namespaced: {namespaced}")

    kinds = {k: len(v) for k, v in objs.items()}
    c.check("k8s: the base holds no Job or CronJob (applying it never creates, suspends or changes a "
            "backfill or the compactor)",
            "Job" not in kinds and "CronJob" not in kinds, f"kinds={kinds}")
    base_kinds = ("Deployment", "ConfigMap", "Secret", "Service", "PodDisruptionBudget", "ServiceAccount")
    c.check("k8s: the base has one each of Deployment, ConfigMap, Secret, Service, "
            "PodDisruptionBudget, ServiceAccount", all(kinds.get(k) == 1 for k in base_kinds), f"kinds={kinds}")
    if not all(kinds.get(k) == 1 for k in base_kinds if k != "ServiceAccount"):
        return

    dep, cm, sec = objs["Deployment"][0], objs["ConfigMap"][0], objs["Secret"][0]
    svc, pdb = objs["Service"][0], objs["PodDisruptionBudget"][0]
    sa = (objs.get("ServiceAccount") or [{"metadata": {"name": "lakewriter"}}])[0]
    cmdata = {k: str(v) for k, v in (cm.get("data") or {}).items()}
    secdata = dict(sec.get("stringData") or {}) | dict(sec.get("data") or {})

    # --- images: a full reference after kustomize
    image_entries = {im.get("name"): im for im in kust.get("images", []) or []}
    dep_image = pod_spec(dep)["containers"][0]["image"]
    rendered = kustomize_images(kust, dep_image)
    rname, rtag, rdigest = split_image(rendered)
    c.check("k8s: kustomization.yaml's images: turns the Deployment's image into a full, pinned "
            "reference (newName with a registry, newTag or digest)",
            split_image(dep_image)[0] in image_entries and full_reference(rname)
            and tag_is_pinned(rname, rtag, rdigest),
            f"{dep_image!r} renders as {rendered!r}")

    unknown = sorted(k for k in cmdata if k.startswith("LAKEWRITER_") and k not in known_env)
    c.check("k8s: ConfigMap's LAKEWRITER_* keys are all variables the binary reads", not unknown,
            f"unknown {unknown}")
    c.check("k8s: ConfigMap sets stream mode, brokers, topics, group, lake and the clickstream pointers",
            cmdata.get("LAKEWRITER_MODE") == "stream"
            and all(cmdata.get(k) for k in ("LAKEWRITER_BROKERS", "LAKEWRITER_TOPICS", "LAKEWRITER_GROUP",
                                             "LAKEWRITER_LAKE"))
            and cmdata.get("LAKEWRITER_EVENT_TYPE_POINTER") == "/event_params/event_type"
            and cmdata.get("LAKEWRITER_EVENT_TIME_POINTER") == "/event_timestamp_ms/ts_ms",
            f"data={cmdata}")
    leaked = [k for k in cmdata if re.search(r"SECRET|PASSWORD|ACCESS_KEY|TOKEN", k)
              or re.search(r"password=", cmdata[k], re.I)]
    c.check("k8s: no credentials in the ConfigMap", not leaked, f"{leaked}")
    c.check("k8s: Secret example carries AWS keys and the SASL password as a Kafka option",
            {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(secdata)
            and any("sasl.password=" in str(v) for v in secdata.values()), f"keys={sorted(secdata)}")

    # --- Kafka TLS: the protocol, the port and the CA agree
    opts = kafka_opts(cmdata.get("KAFKA_OPTS_TUNING"), secdata.get("KAFKA_OPTS_AUTH"), cmdata.get("KAFKA_OPTS_TLS"))
    proto = opts.get("security.protocol", "PLAINTEXT").upper()
    ports = broker_ports(cmdata.get("LAKEWRITER_BROKERS", ""))
    c.check("k8s: Kafka brokers' port fits security.protocol (SSL/SASL_SSL never on the plaintext 9092)",
            ports and (proto not in ("SSL", "SASL_SSL") or 9092 not in ports)
            and (proto not in ("PLAINTEXT", "SASL_PLAINTEXT") or 9093 not in ports),
            f"security.protocol={proto} brokers={cmdata.get('LAKEWRITER_BROKERS')!r}")
    dep_mounts = [m.get("mountPath", "") for m in pod_spec(dep)["containers"][0].get("volumeMounts", [])]
    ca = opts.get("ssl.ca.location")
    c.check("k8s: ssl.ca.location, if set in the base, is inside a volume the Deployment mounts",
            ca is None or any(ca.startswith(m.rstrip("/") + "/") for m in dep_mounts if m != "/tmp"),
            f"ssl.ca.location={ca!r} mounts={dep_mounts}")

    admin = cmdata.get("LAKEWRITER_ADMIN_ADDR", f"0.0.0.0:{DEFAULT_ADMIN_PORT}")
    admin_port = port_of(admin)

    def pod_checks(kind: str, obj: dict, cm_names: list[str], data: dict, kafka: bool = True,
                   peak_rss: int | None = None) -> dict:
        spec = pod_spec(obj)
        ctr = spec["containers"][0]
        env = {e["name"]: e.get("value") for e in ctr.get("env", [])}
        refs = [r.get("configMapRef", r.get("secretRef", {})).get("name") for r in ctr.get("envFrom", [])]
        psc = spec.get("securityContext") or {}
        csc = ctr.get("securityContext") or {}
        sec_ok = (psc.get("runAsNonRoot") is True and int(psc.get("runAsUser", 0)) == 10001
                  and (psc.get("seccompProfile") or {}).get("type") == "RuntimeDefault"
                  and csc.get("readOnlyRootFilesystem") is True
                  and csc.get("allowPrivilegeEscalation") is False
                  and (csc.get("capabilities") or {}).get("drop") == ["ALL"])
        c.check(f"k8s: {kind} runs as uid 10001 non-root, read-only root fs, no privilege escalation, "
                f"caps drop ALL, seccomp RuntimeDefault", sec_ok, f"pod={psc} container={csc}")
        c.check(f"k8s: {kind} takes its settings from ConfigMap {cm_names[0]} and Secret "
                f"{sec['metadata']['name']}", refs == cm_names + [sec["metadata"]["name"]], f"envFrom={refs}")
        c.check(f"k8s: {kind} runs as ServiceAccount {sa['metadata']['name']} without an API token",
                spec.get("serviceAccountName") == sa["metadata"]["name"]
                and spec.get("automountServiceAccountToken") is False,
                f"serviceAccountName={spec.get('serviceAccountName')!r}")
        defined = set(data) | set(secdata)
        unresolved = []
        for e in ctr.get("env", []):
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                if ref not in defined:
                    unresolved.append(f"{e['name']} -> {ref}")
            defined.add(e["name"])
        c.check(f"k8s: {kind}'s $(VAR) references resolve from its ConfigMap/Secret", not unresolved,
                f"unresolved {unresolved}")
        if kafka:
            c.check(f"k8s: {kind}'s LAKEWRITER_KAFKA_OPTS joins KAFKA_OPTS_TUNING, KAFKA_OPTS_AUTH and KAFKA_OPTS_TLS",
                    all(f"$({v})" in str(env.get("LAKEWRITER_KAFKA_OPTS", ""))
                        for v in ("KAFKA_OPTS_TUNING", "KAFKA_OPTS_AUTH", "KAFKA_OPTS_TLS")),
                    f"LAKEWRITER_KAFKA_OPTS={env.get('LAKEWRITER_KAFKA_OPTS')!r}")
        unknown_env = [k for k in list(env) + list(data) if k.startswith("LAKEWRITER_") and k not in known_env]
        c.check(f"k8s: {kind}'s LAKEWRITER_* variables are ones the binary reads", not unknown_env,
                f"unknown {unknown_env}")
        # `run` drains within LAKEWRITER_SHUTDOWN_TIMEOUT; `compact` has no such deadline.
        if kafka:
            try:
                grace = float(spec.get("terminationGracePeriodSeconds", 30))
                timeout = parse_seconds(env.get("LAKEWRITER_SHUTDOWN_TIMEOUT")
                                        or data.get("LAKEWRITER_SHUTDOWN_TIMEOUT") or "25s")
                ok, why = grace > timeout + 5, f"grace {grace}s vs shutdown timeout {timeout}s"
            except ValueError as err:
                ok, why = False, str(err)
            c.check(f"k8s: {kind} terminationGracePeriodSeconds exceeds LAKEWRITER_SHUTDOWN_TIMEOUT by > 5s",
                    ok, why)
        try:
            limit = parse_bytes(ctr["resources"]["limits"]["memory"])
            request = parse_bytes(ctr["resources"]["requests"]["memory"])
            if peak_rss is None:
                cap = parse_bytes(env.get("LAKEWRITER_MAX_BUFFER_BYTES")
                                  or data.get("LAKEWRITER_MAX_BUFFER_BYTES") or str(DEFAULT_MAX_BUFFER))
                ok = 1.5 * cap <= limit <= 4 * cap
                why = f"limit {limit >> 20}Mi, request {request >> 20}Mi, buffer cap {cap >> 20}MiB"
            else:
                ok = 1.5 * peak_rss <= limit
                why = f"limit {limit >> 20}Mi, request {request >> 20}Mi, peak RSS {peak_rss // 10**6} MB"
            ok = ok and request <= limit and "cpu" in ctr["resources"]["limits"]
        except (KeyError, ValueError) as err:
            ok, why = False, f"resources incomplete: {err}"
        if peak_rss is None:
            c.check(f"k8s: {kind} has requests/limits, memory limit 1.5x-4x LAKEWRITER_MAX_BUFFER_BYTES",
                    ok, why)
        else:
            c.check(f"k8s: {kind} has requests/limits, memory limit at least 1.5x its bounded peak RSS "
                    f"(~{peak_rss // 10**6} MB)", ok, why)
        cports = {p.get("name"): p["containerPort"] for p in ctr.get("ports", [])}
        a = port_of(env.get("LAKEWRITER_ADMIN_ADDR") or data.get("LAKEWRITER_ADMIN_ADDR")
                    or f"0.0.0.0:{DEFAULT_ADMIN_PORT}")
        c.check(f"k8s: {kind}'s admin port (LAKEWRITER_ADMIN_ADDR) is the container port `admin`, "
                f"not node_exporter's {NODE_EXPORTER_PORT}",
                cports.get("admin") == a and a != NODE_EXPORTER_PORT, f"admin addr port {a}, ports {cports}")
        return {"spec": spec, "ctr": ctr, "env": env, "ports": cports}

    d = pod_checks("Deployment", dep, [cm["metadata"]["name"]], cmdata)

    c.check("k8s: Deployment runs 2 replicas in stream mode (shared group from the ConfigMap)",
            dep["spec"].get("replicas") == 2
            and d["env"].get("LAKEWRITER_MODE", cmdata.get("LAKEWRITER_MODE")) == "stream"
            and (d["ctr"].get("args") or ["run"])[0] == "run",
            f"replicas={dep['spec'].get('replicas')} env={d['env']}")

    def probe_target(probe: dict | None) -> tuple:
        hg = (probe or {}).get("httpGet") or {}
        port = hg.get("port")
        return hg.get("path"), d["ports"].get(port, port)

    c.check("k8s: Deployment liveness GET /healthz and readiness GET /readyz on the admin port",
            probe_target(d["ctr"].get("livenessProbe")) == ("/healthz", admin_port)
            and probe_target(d["ctr"].get("readinessProbe")) == ("/readyz", admin_port),
            f"liveness={probe_target(d['ctr'].get('livenessProbe'))} "
            f"readiness={probe_target(d['ctr'].get('readinessProbe'))} admin port {admin_port}")

    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    c.check("k8s: Deployment selector matches its pod labels",
            all(pod_labels.get(k) == v for k, v in sel.items()), f"selector={sel} labels={pod_labels}")

    spread = d["spec"].get("topologySpreadConstraints") or []
    zone = [t for t in spread if t.get("topologyKey") == "topology.kubernetes.io/zone"]
    c.check("k8s: Deployment spreads its pods over zones (topologySpreadConstraints on "
            "topology.kubernetes.io/zone selecting its own pods)",
            zone and all(pod_labels.get(k) == v
                         for k, v in ((zone[0].get("labelSelector") or {}).get("matchLabels") or {}).items())
            and (zone[0].get("labelSelector") or {}).get("matchLabels"),
            f"topologySpreadConstraints={spread}")

    pod_ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
    svc_ann = svc["metadata"].get("annotations") or {}
    sport = (svc["spec"].get("ports") or [{}])[0]
    c.check("k8s: Service selects the Deployment's pods on the admin port",
            bool(svc["spec"].get("selector"))
            and all(pod_labels.get(k) == v for k, v in (svc["spec"].get("selector") or {}).items())
            and d["ports"].get(sport.get("targetPort"), sport.get("targetPort")) == admin_port,
            f"selector={svc['spec'].get('selector')} port={sport}")
    c.check("k8s: prometheus.io scrape annotations only on the pods, not on the Service too "
            "(each pod would be scraped twice)",
            not any(k in svc_ann for k in SCRAPE_ANNOTATIONS)
            and pod_ann.get("prometheus.io/scrape") == "true"
            and pod_ann.get("prometheus.io/port") == str(admin_port)
            and pod_ann.get("prometheus.io/path") == "/metrics",
            f"service annotations={svc_ann} pod annotations={pod_ann}")

    c.check("k8s: PodDisruptionBudget maxUnavailable 1 over the Deployment's pods",
            pdb["spec"].get("maxUnavailable") == 1
            and pdb["spec"]["selector"]["matchLabels"] == sel, f"spec={pdb['spec']}")
    c.check("k8s: PodDisruptionBudget lets unready pods be evicted (unhealthyPodEvictionPolicy: "
            "AlwaysAllow; an S3 outage must not block node drains)",
            pdb["spec"].get("unhealthyPodEvictionPolicy") == "AlwaysAllow",
            f"unhealthyPodEvictionPolicy={pdb['spec'].get('unhealthyPodEvictionPolicy')!r}")

    sa_file = next((n for n in on_disk if any(x.get("kind") == "ServiceAccount" for x in load_yaml_docs(kdir / n))),
                   None)
    sa_text = (kdir / sa_file).read_text() if sa_file else ""
    c.check("k8s: ServiceAccount documents IRSA and GKE Workload Identity annotations and mounts no token",
            "eks.amazonaws.com/role-arn" in sa_text and "iam.gke.io/gcp-service-account" in sa_text
            and sa.get("automountServiceAccountToken") is False, "annotations or automount missing")

    check_backfill(root, c, kust, cmdata, secdata, d, pod_checks, objs.get("Job") or [])
    compact_labels = check_compact(root, c, kust, cmdata, cm["metadata"]["name"], d, pod_checks)
    check_kafka_ca(root, c, cmdata, dep)
    check_network_policy(root, c, cmdata, dep, admin_port, compact_labels)
    check_keda(root, c, cmdata, dep)
    check_minio_bucket(root, c, cmdata, sec)
    check_manifest_images(root, c)


def check_backfill(root: Path, c: Checker, base_kust: dict, cmdata: dict, secdata: dict, d: dict,
                   pod_checks, base_jobs: list) -> None:
    bdir = root / "deploy" / "k8s" / "backfill"
    bk = kustomization(bdir)
    jobs = [x for r in bk.get("resources", []) or [] if (bdir / str(r)).is_file()
            for x in load_yaml_docs(bdir / str(r)) if x.get("kind") == "Job"]
    gens = [g for g in bk.get("configMapGenerator", []) or []]
    own = bk.get("kind") == "Kustomization" and len(jobs) == 1 and len(gens) == 1 and gens[0].get("envs")
    c.check("k8s: backfill/ is its own kustomization: one Job and a ConfigMap generated from an env file",
            own, f"kind={bk.get('kind')} jobs={len(jobs)} generators={gens}")
    if own:
        job, gen, kust_of_job = jobs[0], gens[0], bk
        data = {}
        for e in gen.get("envs") or []:
            data.update(parse_env_file(bdir / e))
        for lit in gen.get("literals") or []:
            k, _, v = str(lit).partition("=")
            data[k] = v
    elif len(base_jobs) == 1:
        # A Job left in the base: check what it would run with (the stream ConfigMap).
        job, gen, kust_of_job, data = base_jobs[0], {"name": "lakewriter-backfill"}, base_kust, dict(cmdata)
    else:
        return
    j = pod_checks("Job", job, [gen["name"]], data)
    eff = dict(data)
    eff.update({k: v for k, v in j["env"].items() if v is not None})

    c.check("k8s: Job runs backfill mode with the Deployment's image (same kustomize images:)",
            eff.get("LAKEWRITER_MODE") == "backfill"
            and kustomize_images(kust_of_job, j["ctr"]["image"]) == kustomize_images(base_kust, d["ctr"]["image"]),
            f"mode={eff.get('LAKEWRITER_MODE')!r} image {kustomize_images(kust_of_job, j['ctr']['image'])!r} vs "
            f"{kustomize_images(base_kust, d['ctr']['image'])!r}")
    c.check("k8s: Job sets no LAKEWRITER_GROUP (derived from its arguments: a new range never "
            "resumes an old range's committed progress)", "LAKEWRITER_GROUP" not in eff,
            f"LAKEWRITER_GROUP={eff.get('LAKEWRITER_GROUP')!r}")
    flush = sorted(k for k in eff if k.startswith("LAKEWRITER_FLUSH_"))
    c.check("k8s: Job inherits no stream flush settings (no LAKEWRITER_FLUSH_*: the backfill's "
            "10 min default applies)", not flush, f"{flush}")
    c.check("k8s: Job writes its own table, not the stream table",
            eff.get("LAKEWRITER_TABLE") not in (None, cmdata.get("LAKEWRITER_TABLE")),
            f"table={eff.get('LAKEWRITER_TABLE')!r}")
    same = ["LAKEWRITER_BROKERS", "LAKEWRITER_TOPICS", "LAKEWRITER_LAKE", "LAKEWRITER_EVENT_TYPE_POINTER",
            "LAKEWRITER_EVENT_TIME_POINTER", "LAKEWRITER_EVENT_TIME_FORMAT", "LAKEWRITER_S3_PATH_STYLE",
            "KAFKA_OPTS_TUNING", "KAFKA_OPTS_TLS", "AWS_REGION"]
    differ = {k: (eff.get(k), cmdata.get(k)) for k in same if eff.get(k) != cmdata.get(k)}
    c.check("k8s: backfill.env agrees with the stream ConfigMap on brokers, topics, lake, pointers, "
            "Kafka options", not differ, f"backfill vs stream: {differ}")
    bad = []
    for k in ("LAKEWRITER_FROM", "LAKEWRITER_TO"):
        if k in eff:
            try:
                parse_bound(eff[k])
            except ValueError as e:
                bad.append(f"{k}: {e}")
    c.check("k8s: Job's LAKEWRITER_FROM/TO parse as the binary parses them", not bad, f"{bad}")

    spec = job["spec"]
    rules = (spec.get("podFailurePolicy") or {}).get("rules") or []
    fail2 = [r for r in rules if r.get("action") == "FailJob"
             and (r.get("onExitCodes") or {}).get("operator") == "In"
             and 2 in (r.get("onExitCodes") or {}).get("values", [])
             and (r.get("onExitCodes") or {}).get("containerName") in (None, j["ctr"]["name"])]
    c.check("k8s: Job: restartPolicy Never, a podFailurePolicy that fails the Job at once on exit 2 "
            "(bad configuration), activeDeadlineSeconds and backoffLimit set",
            j["spec"].get("restartPolicy") == "Never" and fail2
            and isinstance(spec.get("activeDeadlineSeconds"), int) and spec.get("activeDeadlineSeconds") > 0
            and isinstance(spec.get("backoffLimit"), int),
            f"restartPolicy={j['spec'].get('restartPolicy')!r} podFailurePolicy={rules} "
            f"activeDeadlineSeconds={spec.get('activeDeadlineSeconds')!r}")
    c.check("k8s: Job is not suspended (applying backfill/ is the decision to run; the base never holds it)",
            spec.get("suspend") in (None, False), f"suspend={spec.get('suspend')!r}")


def check_compact(root: Path, c: Checker, base_kust: dict, cmdata: dict, cm_name: str, d: dict,
                  pod_checks) -> dict | None:
    """The compaction CronJob (deploy/k8s/compact); returns its pods' labels."""
    cdir = root / "deploy" / "k8s" / "compact"
    ck = kustomization(cdir)
    cjs = compact_cronjobs(root)
    own = ck.get("kind") == "Kustomization" and len(cjs) == 1
    c.check("k8s: compact/ is its own kustomization holding one CronJob (kept out of the base: one "
            "compactor per lake)", own, f"kind={ck.get('kind')} cronjobs={len(cjs)}")
    if not own:
        return None
    cj = cjs[0]
    # Lake, S3 settings and admin address come from the writers' ConfigMap.
    j = pod_checks("CronJob", cj, [cm_name], cmdata, kafka=False, peak_rss=COMPACT_PEAK_RSS)
    ctr, spec = j["ctr"], j["spec"]
    # The image's ENTRYPOINT is lakewriter: args are the subcommand and its flags.
    args = [str(a) for a in (ctr.get("command") or [])[1:] + (ctr.get("args") or [])]
    flags = cli_flags(args)
    image = kustomize_images(ck, ctr["image"])
    c.check("k8s: CronJob runs `compact --once` with the Deployment's image (same kustomize images:)",
            args[:1] == ["compact"] and flags.get("--once") is True and "--interval" not in flags
            and image == kustomize_images(base_kust, d["ctr"]["image"]),
            f"args={args} image {image!r}")
    c.check("k8s: CronJob sets no LAKEWRITER_KAFKA_OPTS (the compactor never talks to Kafka)",
            "LAKEWRITER_KAFKA_OPTS" not in j["env"], f"env={j['env']}")

    cspec = cj["spec"]
    m = re.fullmatch(r"\*/(\d+) \* \* \* \*", str(cspec.get("schedule", "")).strip())
    period = int(m.group(1)) * 60 if m else None
    sds = cspec.get("startingDeadlineSeconds")
    c.check("k8s: CronJob: concurrencyPolicy Forbid, a startingDeadlineSeconds shorter than its period, "
            "history limits keeping at least 2 failed Jobs (LakewriterCompactionFailing counts them), "
            "not suspended",
            cspec.get("concurrencyPolicy") == "Forbid"
            and isinstance(sds, int) and 0 < sds and (period is None or sds < period)
            and isinstance(cspec.get("successfulJobsHistoryLimit"), int)
            and isinstance(cspec.get("failedJobsHistoryLimit"), int) and cspec["failedJobsHistoryLimit"] >= 2
            and cspec.get("suspend") in (None, False),
            f"schedule={cspec.get('schedule')!r} concurrencyPolicy={cspec.get('concurrencyPolicy')!r} "
            f"startingDeadlineSeconds={sds!r} history={cspec.get('successfulJobsHistoryLimit')!r}/"
            f"{cspec.get('failedJobsHistoryLimit')!r} suspend={cspec.get('suspend')!r}")

    jspec = cspec["jobTemplate"]["spec"]
    rules = (jspec.get("podFailurePolicy") or {}).get("rules") or []
    fail2 = [r for r in rules if r.get("action") == "FailJob"
             and (r.get("onExitCodes") or {}).get("operator") == "In"
             and 2 in (r.get("onExitCodes") or {}).get("values", [])
             and (r.get("onExitCodes") or {}).get("containerName") in (None, ctr["name"])]
    try:
        grace = parse_seconds(str(flags.get("--grace", COMPACT_DEFAULTS["--grace"])))
        ads = jspec.get("activeDeadlineSeconds")
        deadline_ok = isinstance(ads, int) and ads > grace
    except ValueError as err:
        deadline_ok, grace, ads = False, str(err), jspec.get("activeDeadlineSeconds")
    c.check("k8s: CronJob's Job: restartPolicy Never, a podFailurePolicy that fails the Job at once on exit 2 "
            "(bad configuration, the lease held elsewhere), backoffLimit, and an activeDeadlineSeconds "
            "longer than --grace (a run waits out the grace of its last merge)",
            spec.get("restartPolicy") == "Never" and fail2 and isinstance(jspec.get("backoffLimit"), int)
            and deadline_ok,
            f"restartPolicy={spec.get('restartPolicy')!r} podFailurePolicy={rules} "
            f"backoffLimit={jspec.get('backoffLimit')!r} activeDeadlineSeconds={ads!r} grace={grace}")

    work = str(flags.get("--work-dir", COMPACT_DEFAULTS["--work-dir"])).rstrip("/") or "/"
    mounts = [mt for mt in ctr.get("volumeMounts", []) or []
              if work == str(mt.get("mountPath", "")).rstrip("/")
              or work.startswith(str(mt.get("mountPath", "")).rstrip("/") + "/")]
    mount = max(mounts, key=lambda mt: len(str(mt.get("mountPath", ""))), default=None)
    vol = next((v for v in spec.get("volumes", []) or [] if mount and v.get("name") == mount.get("name")), None)
    try:
        target = parse_bytes(str(flags.get("--target-file-size", COMPACT_DEFAULTS["--target-file-size"])))
        size = parse_bytes(str(((vol or {}).get("emptyDir") or {}).get("sizeLimit", "0")))
        ok, why = vol is not None and "emptyDir" in vol and size >= 2 * target, \
            f"--work-dir {work} on {vol}, target file size {target >> 20}MiB"
    except ValueError as err:
        ok, why = False, str(err)
    c.check("k8s: CronJob's --work-dir is an emptyDir with a sizeLimit of at least 2x --target-file-size "
            "(a merge's inputs and outputs; the root filesystem is read-only)", ok, why)

    try:
        min_age = parse_seconds(str(flags.get("--min-age", COMPACT_DEFAULTS["--min-age"])))
        interval = parse_seconds(cmdata.get("LAKEWRITER_FLUSH_INTERVAL", "60s"))
        ok, why = min_age > interval, f"--min-age {min_age}s vs LAKEWRITER_FLUSH_INTERVAL {interval}s"
    except ValueError as err:
        ok, why = False, str(err)
    c.check("k8s: CronJob's --min-age exceeds the writers' LAKEWRITER_FLUSH_INTERVAL (younger files may "
            "belong to a cycle still committing)", ok, why)
    probes = [p for p in ("livenessProbe", "readinessProbe", "startupProbe") if ctr.get(p)]
    c.check("k8s: CronJob's container has no probes (a run sleeps through the grace of its last merge, "
            "which a liveness probe would take for a stall)", not probes, f"probes {probes}")
    return pod_template_labels(cj)


def check_kafka_ca(root: Path, c: Checker, cmdata: dict, dep: dict) -> None:
    cdir = root / "deploy" / "k8s" / "kafka-ca"
    comp = kustomization(cdir)
    text = yaml.safe_dump(comp)
    m = re.search(r"ssl\.ca\.location=([^\s;\"']+)", text)
    mounts, volumes, targets_ok = [], [], False
    for p in comp.get("patches", []) or []:
        t = p.get("target") or {}
        ops = yaml.safe_load(p.get("patch") or "[]") or []
        if not isinstance(ops, list):
            continue
        for op in ops:
            if str(op.get("path", "")).endswith("/volumeMounts/-"):
                mounts.append(op.get("value") or {})
                kind_re, name_re = str(t.get("kind", "")), str(t.get("name", ""))
                targets_ok = (bool(re.fullmatch(kind_re, "Deployment")) and bool(re.fullmatch(kind_re, "Job"))
                              and bool(re.fullmatch(name_re, dep["metadata"]["name"]))
                              and bool(re.fullmatch(name_re, "lakewriter-backfill")))
            if str(op.get("path", "")).endswith("/volumes/-"):
                volumes.append(op.get("value") or {})
    loc = m.group(1) if m else None
    mount = next((x for x in mounts if loc and loc.startswith(str(x.get("mountPath", "")).rstrip("/") + "/")), None)
    vol = next((v for v in volumes if mount and v.get("name") == mount.get("name")), None)
    c.check("k8s: kafka-ca/ component sets ssl.ca.location inside a read-only mount of a Secret it adds, "
            "in the Deployment and the backfill Job",
            comp.get("kind") == "Component" and loc and mount and mount.get("readOnly") is True
            and vol and (vol.get("secret") or vol.get("configMap")) and targets_ok,
            f"kind={comp.get('kind')} ssl.ca.location={loc!r} mounts={mounts} volumes={volumes} "
            f"targets cover Deployment+Job={targets_ok}")


def check_network_policy(root: Path, c: Checker, cmdata: dict, dep: dict, admin_port: int,
                         compact_labels: dict | None) -> None:
    ndir = root / "deploy" / "k8s" / "network-policy"
    comp = kustomization(ndir)
    pols = [x for r in comp.get("resources", []) or [] if (ndir / str(r)).is_file()
            for x in load_yaml_docs(ndir / str(r)) if x.get("kind") == "NetworkPolicy"]
    writers = "k8s: network-policy/ component: the writers (stream and backfill) reach only DNS, the " \
              "brokers' port and S3, and admit the admin port from a monitoring namespace"
    compactor = "k8s: network-policy/ component: the compactor reaches only DNS and S3 (no Kafka), and admits " \
                "the admin port from a monitoring namespace"
    if comp.get("kind") != "Component" or not pols:
        c.check(writers, False, f"kind={comp.get('kind')} policies={len(pols)}")
        return
    labels = dep["spec"]["template"]["metadata"]["labels"]
    kafka_ports = set(broker_ports(cmdata.get("LAKEWRITER_BROKERS", "")))

    def effective(pod_labels: dict) -> tuple[list, set, bool, list]:
        """What the policies selecting these pods allow, added up: (names, egress ports, whether
        some egress rule allows every port, ingress rules)."""
        mine = [p for p in pols if selects(p["spec"].get("podSelector"), pod_labels)]
        eg, any_port, ing = set(), False, []
        for p in mine:
            for r in p["spec"].get("egress", []) or []:
                if not r.get("ports"):
                    any_port = True
                eg |= {(x.get("port"), x.get("protocol", "TCP")) for x in r.get("ports", []) or []}
            ing += p["spec"].get("ingress", []) or []
        ok_types = all({"Ingress", "Egress"} <= set(p["spec"].get("policyTypes", [])) for p in mine)
        return [p["metadata"]["name"] for p in mine] if ok_types else [], eg, any_port, ing

    def ingress_ok(ing: list) -> bool:
        return bool(ing) and all(any("namespaceSelector" in f for f in r.get("from", []) or [])
                                 and r.get("ports")
                                 and {p.get("port") for p in r.get("ports", []) or []} <= {"admin", admin_port}
                                 for r in ing)

    def base_ok(eg: set) -> bool:
        return {(53, "UDP"), (53, "TCP")} <= eg and ((443, "TCP") in eg or (9000, "TCP") in eg)

    problems = []
    for role in ("stream", "backfill"):
        names, eg, _, ing = effective(dict(labels, **{"app.kubernetes.io/component": role}))
        if not (names and base_ok(eg) and kafka_ports and all((p, "TCP") in eg for p in kafka_ports)
                and ingress_ok(ing)):
            problems.append(f"{role}: policies {names} egress {sorted(eg, key=str)} ingress {ing}")
    c.check(writers, not problems, f"{problems}; brokers' ports {sorted(kafka_ports)}")

    if compact_labels is None:
        c.skip(compactor, "no compaction CronJob in deploy/k8s/compact")
        return
    names, eg, any_port, ing = effective(compact_labels)
    kafka = sorted(p for p in kafka_ports if (p, "TCP") in eg)
    c.check(compactor, names and base_ok(eg) and not kafka and not any_port and ingress_ok(ing),
            f"policies {names} egress {sorted(eg, key=str)} (Kafka ports {kafka}, a rule for every port: "
            f"{any_port}) ingress {ing}")


def check_keda(root: Path, c: Checker, cmdata: dict, dep: dict) -> None:
    kdir = root / "deploy" / "k8s" / "keda"
    comp = kustomization(kdir)
    docs = [x for r in comp.get("resources", []) or [] if (kdir / str(r)).is_file()
            for x in load_yaml_docs(kdir / str(r))]
    sos = [x for x in docs if x.get("kind") == "ScaledObject"]
    auths = {x["metadata"]["name"] for x in docs if x.get("kind") == "TriggerAuthentication"}
    if comp.get("kind") != "Component" or len(sos) != 1:
        c.check("k8s: keda/ component holds one ScaledObject", False, f"kind={comp.get('kind')} {len(sos)}")
        return
    so = sos[0]
    spec = so["spec"]
    ann = so["metadata"].get("annotations") or {}
    trig = next((t for t in spec.get("triggers", []) if t.get("type") == "kafka"), {})
    md = trig.get("metadata") or {}
    c.check("k8s: ScaledObject scales the Deployment on the Kafka lag of the ConfigMap's group, topic and brokers",
            (spec.get("scaleTargetRef") or {}).get("name") == dep["metadata"]["name"]
            and md.get("consumerGroup") == cmdata.get("LAKEWRITER_GROUP")
            and md.get("topic") in cmdata.get("LAKEWRITER_TOPICS", "").split(",")
            and md.get("bootstrapServers") == cmdata.get("LAKEWRITER_BROKERS")
            and (trig.get("authenticationRef") or {}).get("name") in auths,
            f"target={spec.get('scaleTargetRef')} trigger={md} auth={trig.get('authenticationRef')}")
    try:
        partitions = int(ann["lakewriter/topic-partitions"])
        mx, mn = int(spec["maxReplicaCount"]), int(spec.get("minReplicaCount", 0))
        ok, why = 1 <= mn <= mx <= partitions, f"min {mn} max {mx} partitions {partitions}"
    except (KeyError, ValueError) as e:
        ok, why = False, f"missing {e}"
    c.check("k8s: ScaledObject's maxReplicaCount <= the topic's partitions (lakewriter/topic-partitions)",
            ok and str(md.get("allowIdleConsumers", "false")).lower() == "false", why)
    try:
        rate = float(ann["lakewriter/peak-events-per-second"])
        interval = parse_seconds(cmdata.get("LAKEWRITER_FLUSH_INTERVAL", "60s"))
        threshold = float(md["lagThreshold"])
        ok, why = threshold > rate * interval, f"lagThreshold {threshold:.0f} vs {rate:.0f}/s x {interval:.0f}s"
    except (KeyError, ValueError) as e:
        ok, why = False, f"missing {e}"
    c.check("k8s: ScaledObject's lagThreshold exceeds peak rate x LAKEWRITER_FLUSH_INTERVAL (committed lag "
            "saw-tooths by that much per flush)", ok, why)
    c.check("k8s: ScaledObject counts uncommitted partitions from the earliest offset, as lakewriter "
            "reads them (offsetResetPolicy: earliest)", md.get("offsetResetPolicy") == "earliest",
            f"offsetResetPolicy={md.get('offsetResetPolicy')!r}")
    removes = any(op.get("op") == "remove" and op.get("path") == "/spec/replicas"
                  for p in comp.get("patches", []) or []
                  for op in (yaml.safe_load(p.get("patch") or "[]") or [])
                  if isinstance(op, dict) and (p.get("target") or {}).get("kind") == "Deployment")
    c.check("k8s: keda/ removes the Deployment's replicas (the HPA owns the count)", removes,
            "no remove of /spec/replicas")


def check_minio_bucket(root: Path, c: Checker, cmdata: dict, sec: dict) -> None:
    mdir = root / "deploy" / "k8s-examples" / "minio-bucket"
    jobs = [x for p in sorted(mdir.glob("*.yaml")) if p.name != "kustomization.yaml"
            for x in load_yaml_docs(p) if x.get("kind") == "Job"]
    if len(jobs) != 1:
        c.check("k8s: k8s-examples/minio-bucket has a bucket-creation Job", False, f"{len(jobs)} Jobs")
        return
    ctr = pod_spec(jobs[0])["containers"][0]
    env = {e["name"]: e.get("value") for e in ctr.get("env", [])}
    bucket = cmdata.get("LAKEWRITER_LAKE", "").removeprefix("s3://").split("/")[0]
    cmd = " ".join(map(str, (ctr.get("command") or []) + (ctr.get("args") or [])))
    refs = [r.get("secretRef", {}).get("name") for r in ctr.get("envFrom", [])]
    c.check("k8s: the MinIO bucket Job creates LAKEWRITER_LAKE's bucket idempotently with the lakewriter Secret",
            "mc" in cmd and "mb --ignore-existing" in cmd and env.get("LAKE_BUCKET") == bucket
            and sec["metadata"]["name"] in refs
            and (ctr.get("securityContext") or {}).get("readOnlyRootFilesystem") is True,
            f"bucket env={env.get('LAKE_BUCKET')!r} lake bucket={bucket!r} envFrom={refs}")


def check_manifest_images(root: Path, c: Checker) -> None:
    bad = []
    for p in manifest_files(root):
        for d in load_yaml_docs(p):
            spec = pod_spec_or_none(d)
            for ctr in ((spec or {}).get("containers") or []) + ((spec or {}).get("initContainers") or []):
                name, tag, digest = split_image(ctr.get("image", ""))
                if name == "lakewriter":
                    continue  # rewritten by the kustomizations' images: (checked above)
                if not (tag_is_pinned(name, tag, digest) and full_reference(name)):
                    bad.append(f"{p.relative_to(root)}: {ctr.get('image')}")
    for kd in sorted({p.parent for p in manifest_files(root)} | {root / "deploy" / "k8s"}):
        for im in kustomization(kd).get("images", []) or []:
            if not (full_reference(str(im.get("newName", ""))) and
                    tag_is_pinned(str(im.get("newName")), str(im.get("newTag")) if im.get("newTag") else None,
                                  im.get("digest"))):
                bad.append(f"{kd.relative_to(root)}/kustomization.yaml images: {im}")
    c.check("k8s: every image in deploy/k8s and deploy/k8s-examples is a full reference pinned to a release",
            not bad, f"{bad}")


# -------------------------------------------------------------- monitoring

def check_monitoring(root: Path, c: Checker) -> None:
    mdir = root / "deploy" / "k8s" / "monitoring"
    comp = kustomization(mdir)
    metrics = exported_metrics(root)
    docs = [x for r in comp.get("resources", []) or [] if (mdir / str(r)).is_file()
            for x in load_yaml_docs(mdir / str(r))]
    pms = [x for x in docs if x.get("kind") == "PodMonitor"]
    prs = [x for x in docs if x.get("kind") == "PrometheusRule"]
    c.check("monitoring: a kustomize Component with one PodMonitor and one PrometheusRule",
            comp.get("kind") == "Component" and len(pms) == 1 and len(prs) == 1,
            f"kind={comp.get('kind')} podmonitors={len(pms)} rules={len(prs)}")
    c.check("monitoring: src/metrics.rs's metric names found", len(metrics) >= 10, f"{sorted(metrics)}")
    base = root / "deploy" / "k8s"
    dep = next((x for p in sorted(base.glob("*.yaml")) if p.name != "kustomization.yaml"
                for x in load_yaml_docs(p) if x.get("kind") == "Deployment"), None)
    if len(pms) == 1 and dep:
        pm = pms[0]["spec"]
        labels = dep["spec"]["template"]["metadata"]["labels"]
        ports = {p.get("name") for ctr in pod_spec(dep)["containers"] for p in ctr.get("ports", [])}
        sel = (pm.get("selector") or {}).get("matchLabels") or {}
        eps = pm.get("podMetricsEndpoints") or []
        relabel = [r for ep in eps for r in ep.get("relabelings") or []]
        sets = {r.get("targetLabel"): r for r in relabel}
        roles = [labels, dict(labels, **{"app.kubernetes.io/component": "backfill"})]
        roles += [pod_template_labels(cj) for cj in compact_cronjobs(root)]
        c.check("monitoring: PodMonitor selects the stream, backfill and compaction pods on their `admin` port, "
                "/metrics, and labels series job=lakewriter and component=<pod's component>",
                sel and all(selects(pm.get("selector"), r) for r in roles)
                and eps and all(ep.get("port") in ports and ep.get("path", "/metrics") == "/metrics" for ep in eps)
                and (sets.get("job") or {}).get("replacement") == "lakewriter"
                and "__meta_kubernetes_pod_label_app_kubernetes_io_component" in
                (sets.get("component") or {}).get("sourceLabels", []),
                f"selector={pm.get('selector')} endpoints={eps}")
        pod_ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
        removed = set()
        for p in comp.get("patches", []) or []:
            if (p.get("target") or {}).get("kind") == "Deployment":
                for op in yaml.safe_load(p.get("patch") or "[]") or []:
                    if isinstance(op, dict) and op.get("op") == "remove":
                        removed.add(str(op.get("path")).replace("~1", "/").rsplit("annotations/", 1)[-1])
        present = {k for k in SCRAPE_ANNOTATIONS if k in pod_ann}
        c.check("monitoring: the component removes the pods' prometheus.io annotations (no second scrape "
                "beside the PodMonitor)", present <= removed, f"annotations {sorted(present)} removed {sorted(removed)}")

    rules_by_name = {}
    if len(prs) == 1:
        groups = (prs[0].get("spec") or {}).get("groups") or []
        bad_shape, unknown = [], {}
        for g in groups:
            for r in g.get("rules") or []:
                if "alert" not in r:
                    continue
                rules_by_name[r["alert"]] = r
                if not (r.get("expr") and (r.get("labels") or {}).get("severity") in ("critical", "warning", "info")
                        and (r.get("annotations") or {}).get("summary")
                        and (r.get("annotations") or {}).get("description")):
                    bad_shape.append(r["alert"])
                missing = metrics_in(str(r.get("expr"))) - metrics
                if missing:
                    unknown[r["alert"]] = sorted(missing)
        c.check("monitoring: every alert has an expr, a severity, a summary and a description",
                rules_by_name and not bad_shape, f"incomplete: {bad_shape}")
        c.check("monitoring: the rules use only metrics src/metrics.rs exports", not unknown, f"unknown {unknown}")
        text = "\n".join(str(r.get("expr")) for r in rules_by_name.values())
        want = {
            "consumer lag growing (deriv of lakewriter_consumer_lag)": r"deriv\(lakewriter_consumer_lag",
            "last commit older than a threshold while lag > 0":
                r"lakewriter_last_commit_(timestamp_ms|age_seconds)[\s\S]*lakewriter_consumer_lag",
            "dead letters rising": r"lakewriter_(topic_)?dead_letters_total",
            "upload retries rising": r"lakewriter_upload_retries_total",
            "rollbacks rising": r"lakewriter_rollbacks_total",
            "commit failures rising": r"lakewriter_commit_failures_total",
            "not ready": r"kube_deployment_status_replicas_unavailable|kube_pod_status_ready",
        }
        missing = [k for k, pat in want.items() if not re.search(pat, text)]
        c.check("monitoring: alerts cover lag growth, stalled commits with lag, dead letters, retries, "
                "rollbacks, commit failures and unready pods", not missing, f"missing {missing}")
        cm = next((x for p in sorted(base.glob("*.yaml")) for x in load_yaml_docs(p)
                   if x.get("kind") == "ConfigMap"), {})
        interval = parse_seconds(str((cm.get("data") or {}).get("LAKEWRITER_FLUSH_INTERVAL", "60s")))
        m = re.search(r"lakewriter_last_commit_timestamp_ms[^\n]*\)\s*/\s*1000\)\s*>\s*(\d+(?:\.\d+)?)", text) \
            or re.search(r"lakewriter_last_commit_age_seconds[^\n]*>\s*(\d+(?:\.\d+)?)", text)
        c.check("monitoring: the stalled-commit threshold is 3x the stream's LAKEWRITER_FLUSH_INTERVAL",
                m is not None and float(m.group(1)) == 3 * interval,
                f"threshold {m.group(1) if m else None} vs 3 x {interval}s")
        cjs = compact_cronjobs(root)
        if cjs:
            name = re.escape(cjs[0]["metadata"]["name"])
            stale = re.search(rf'kube_cronjob_status_last_successful_time\{{[^}}]*cronjob="{name}"', text)
            failing = re.search(rf'kube_job_failed[\s\S]*kube_job_owner\{{[^}}]*owner_name="{name}"', text)
            c.check("monitoring: alerts cover the compaction CronJob compact/ deploys, by its name (no success "
                    "for hours: kube_cronjob_status_last_successful_time; failing Jobs: kube_job_failed of the "
                    "Jobs it owns)", stale and failing,
                    f"CronJob {cjs[0]['metadata']['name']!r}: last-success rule {bool(stale)}, "
                    f"failed-Jobs rule {bool(failing)}")
        tests_file = root / "tests" / "deploy" / "prometheus-rules.test.yaml"
        tests = yaml.safe_load(tests_file.read_text()) if tests_file.is_file() else {}
        fires, silent = set(), set()
        for t in (tests or {}).get("tests", []) or []:
            for a in t.get("alert_rule_test", []) or []:
                (fires if a.get("exp_alerts") else silent).add(a.get("alertname"))
        untested = sorted(n for n in rules_by_name if n not in fires or n not in silent)
        c.check("monitoring: every alert has a promtool unit test where it fires and one where it stays silent",
                rules_by_name and not untested, f"untested: {untested}")

    check_dashboard(root, c, mdir, comp, metrics)


def check_dashboard(root: Path, c: Checker, mdir: Path, comp: dict, metrics: set) -> None:
    files = [str(f).split("=")[-1] for g in comp.get("configMapGenerator", []) or []
             for f in g.get("files", []) or [] if str(f).endswith(".json")]
    gens = [g for g in comp.get("configMapGenerator", []) or [] if any(str(f).endswith(".json")
                                                                        for f in g.get("files", []) or [])]
    c.check("monitoring: the dashboard ships as a ConfigMap labelled grafana_dashboard=1",
            len(files) == 1 and str(((gens[0].get("options") or {}).get("labels") or {}).get("grafana_dashboard")) == "1",
            f"generators={gens}")
    if len(files) != 1:
        return
    try:
        dash = json.loads((mdir / files[0]).read_text())
    except (OSError, ValueError) as e:
        c.check("monitoring: dashboard JSON parses", False, str(e))
        return
    c.check("monitoring: dashboard JSON parses", True)
    top = ["title", "uid", "schemaVersion", "panels", "templating", "time"]
    c.check("monitoring: dashboard has title, uid, schemaVersion, panels, templating and time",
            all(k in dash for k in top) and isinstance(dash.get("panels"), list) and dash["panels"],
            f"keys={sorted(dash)}")
    panels = dash.get("panels") or []
    flat = []
    for p in panels:
        flat.append(p)
        flat += p.get("panels") or []
    ids = [p.get("id") for p in flat]
    variables = {v.get("name") for v in (dash.get("templating") or {}).get("list", [])}
    problems, used_vars, exprs = [], set(), []
    occupied = {}
    for p in flat:
        gp = p.get("gridPos") or {}
        if not all(isinstance(gp.get(k), int) for k in ("x", "y", "w", "h")) or gp["x"] + gp["w"] > 24:
            problems.append(f"panel {p.get('id')}: gridPos {gp}")
        else:
            for x in range(gp["x"], gp["x"] + gp["w"]):
                for y in range(gp["y"], gp["y"] + gp["h"]):
                    if (x, y) in occupied:
                        problems.append(f"panel {p.get('id')} overlaps panel {occupied[(x, y)]}")
                        break
                    occupied[(x, y)] = p.get("id")
                else:
                    continue
                break
        if p.get("type") == "row":
            continue
        targets = p.get("targets") or []
        refs = [t.get("refId") for t in targets]
        if not p.get("title") or not p.get("datasource") or not targets or len(set(refs)) != len(refs) \
                or not all(t.get("expr") for t in targets):
            problems.append(f"panel {p.get('id')} {p.get('title')!r}: title, datasource or targets missing")
        for t in targets:
            exprs.append(t.get("expr", ""))
        used_vars |= set(re.findall(r"\$\{?([a-zA-Z_]\w*)", json.dumps(p)))
    used_vars -= {"__rate_interval", "__interval", "__range"}
    c.check("monitoring: dashboard panels have unique ids, a title, a data source, queries with unique "
            "refIds, and non-overlapping positions on the 24-column grid",
            len(ids) == len(set(ids)) and None not in ids and not problems, f"{problems[:5]}")
    c.check("monitoring: dashboard variables used by the panels are defined", used_vars <= variables,
            f"undefined {sorted(used_vars - variables)}")
    used = set().union(*(metrics_in(e) for e in exprs)) if exprs else set()
    c.check("monitoring: dashboard queries use only metrics src/metrics.rs exports", used and used <= metrics,
            f"unknown {sorted(used - metrics)}")
    want = {
        "event rates": "lakewriter_events_in_total|lakewriter_topic_events_in_total",
        "lag per partition": r"by \(topic, partition\) \(lakewriter_consumer_lag",
        "flush latency": r"histogram_quantile\(.*lakewriter_flush_duration_seconds_bucket",
        "files": "lakewriter_files_written_total",
        "bytes": "lakewriter_bytes_written_total",
        "dead letters": "lakewriter_topic_dead_letters_total|lakewriter_dead_letters_total",
    }
    all_exprs = "\n".join(exprs)
    missing = [k for k, pat in want.items() if not re.search(pat, all_exprs)]
    c.check("monitoring: dashboard shows event rates, lag per partition, flush latency, files, bytes, "
            "dead letters", not missing, f"missing {missing}")


# -------------------------------------------------------------- Dockerfile

def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """[(INSTRUCTION, args)] with comments dropped and continuations joined."""
    lines, buf = [], ""
    for raw in text.splitlines():
        s = raw.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        if buf and s.startswith("#"):
            continue
        if s.endswith("\\"):
            buf += s[:-1] + " "
            continue
        buf += s
        if buf.strip():
            lines.append(buf.strip())
        buf = ""
    if buf.strip():
        lines.append(buf.strip())
    out = []
    for ln in lines:
        instr, _, args = ln.partition(" ")
        out.append((instr.upper(), args.strip()))
    return out


def installed_packages(run_args: str) -> set[str]:
    pkgs = set()
    for m in re.finditer(r"apt-get\s+install\s+([^&;|]*)", run_args):
        for tok in m.group(1).split():
            if not tok.startswith("-"):
                pkgs.add(tok.split("=")[0])
    return pkgs


def version_tuple(v: str) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", v))


def check_dockerfile(root: Path, c: Checker) -> None:
    path = root / "deploy" / "Dockerfile"
    instrs = dockerfile_instructions(path.read_text())
    stages: list[list[tuple[str, str]]] = []
    for ins in instrs:
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    c.check("dockerfile: multi-stage (builder + runtime)", len(stages) >= 2, f"{len(stages)} stage(s)")
    if len(stages) < 2:
        return
    builder, runtime = stages[0], stages[-1]
    args = {m.group(1): m.group(2) for a in instrs if a[0] == "ARG"
            for m in [re.match(r"(\w+)=(\S+)", a[1])] if m}

    def expand(s: str) -> str:
        return re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), s)

    bfrom = expand(builder[0][1].split()[0])
    rfrom = expand(runtime[0][1].split()[0])
    bm = re.fullmatch(r"rust:(\d+\.\d+\.\d+)-(\w+)", bfrom)
    rm = re.fullmatch(r"debian:(\d+)\.\d+-slim", rfrom)
    c.check("dockerfile: builder FROM rust:<x.y.z>-<debian release>, runtime FROM debian:<N.M>-slim "
            "(pinned releases, not rust:1 or bookworm-slim)", bm is not None and rm is not None,
            f"builder {bfrom!r} runtime {rfrom!r}")
    c.check("dockerfile: builder and runtime are the same Debian release (glibc)",
            bm is not None and rm is not None and DEBIAN_RELEASES.get(bm.group(2)) == rm.group(1),
            f"builder {bfrom!r} runtime {rfrom!r}")
    cargo = root / "Cargo.toml"
    msrv = re.search(r'^rust-version\s*=\s*"([^"]+)"', cargo.read_text(), re.M) if cargo.is_file() else None
    c.check("dockerfile: the builder's Rust is at least Cargo.toml's rust-version",
            bm is not None and msrv is not None and version_tuple(bm.group(1)) >= version_tuple(msrv.group(1)),
            f"builder {bfrom!r}, rust-version {msrv.group(1) if msrv else None!r}")

    bruns = " ".join(a for i, a in builder if i == "RUN")
    c.check("dockerfile: builder runs `cargo build --release --locked`",
            re.search(r"cargo build (?=.*--release)(?=.*--locked)", bruns) is not None, bruns[:200])

    rruns = [a for i, a in runtime if i == "RUN"]
    rpkgs = set().union(*(installed_packages(a) for a in rruns)) if rruns else set()
    c.check("dockerfile: runtime installs ca-certificates and libssl3 (and nothing else)",
            rpkgs == {"ca-certificates", "libssl3"}, f"installs {sorted(rpkgs)}")
    bad = sorted(rpkgs & COMPILER_PACKAGES)
    c.check("dockerfile: no compiler or build packages (gcc, cargo, rustc, build-essential, cmake, ...) "
            "in the runtime stage", not bad and not any(re.search(r"\b(rustup|cargo|rustc)\b", a) for a in rruns),
            f"found {bad}")
    hygiene = all(("--no-install-recommends" in a and "rm -rf /var/lib/apt/lists" in a)
                  for a in rruns if "apt-get install" in a)
    c.check("dockerfile: runtime apt installs use --no-install-recommends and clean the lists", hygiene,
            " | ".join(rruns)[:200])

    users = [a for i, a in runtime if i == "USER"]
    user = users[-1] if users else ""
    uname = user.split(":")[0]
    c.check("dockerfile: runtime stage ends as a non-root USER (numeric uid 10001)",
            bool(user) and uname not in ("root", "0") and uname == "10001", f"USER {user!r}")

    copies = [a for i, a in runtime if i == "COPY"]
    c.check("dockerfile: runtime copies the lakewriter binary from the builder into /usr/local/bin",
            any(a.startswith("--from=") and a.split()[-1] == "/usr/local/bin/lakewriter" for a in copies),
            f"COPY {copies}")

    ep = [a for i, a in runtime if i == "ENTRYPOINT"]
    cmd = [a for i, a in runtime if i == "CMD"]
    expose = " ".join(a for i, a in runtime if i == "EXPOSE").split()
    c.check(f'dockerfile: ENTRYPOINT ["lakewriter"], CMD ["run"], EXPOSE {DEFAULT_ADMIN_PORT} '
            f"(the binary's default admin port)",
            ep and ep[-1].replace(" ", "") == '["lakewriter"]'
            and cmd and cmd[-1].replace(" ", "") == '["run"]' and str(DEFAULT_ADMIN_PORT) in expose,
            f"ENTRYPOINT {ep} CMD {cmd} EXPOSE {expose}")

    unpinned = [expand(s[0][1].split()[0]) for s in stages
                if not tag_is_pinned(*split_image(expand(s[0][1].split()[0])))]
    c.check("dockerfile: base images are pinned to a release (not :latest, untagged or a bare major)",
            not unpinned, f"{unpinned}")

    di = root / ".dockerignore"
    entries = {ln.strip().rstrip("/") for ln in di.read_text().splitlines()} if di.is_file() else set()
    c.check(".dockerignore: excludes target/, .git and lake/ from the build context",
            {"target", ".git", "lake"} <= entries, f"entries={sorted(entries)}")


# -------------------------------------------------------------------- docs

def shell_commands(text: str) -> list[str]:
    """Commands with their backslash continuations joined (comment markers stripped)."""
    lines = [re.sub(r"^\s*#\s?", "", ln) for ln in text.splitlines()]
    out, buf = [], ""
    for ln in lines:
        if ln.rstrip().endswith("\\"):
            buf += ln.rstrip()[:-1] + " "
            continue
        out.append(buf + ln)
        buf = ""
    if buf:
        out.append(buf)
    return out


def check_docs(root: Path, c: Checker) -> None:
    services, _ = compose_services(root)
    ch_env = env_list_to_dict(services.get("clickhouse", {}).get("environment"))
    user = ch_env.get("CLICKHOUSE_USER", "default")
    password = compose_default(ch_env.get("CLICKHOUSE_PASSWORD", ""))
    files = ["README.md", "docs/deploy.md", "deploy/docker-compose.yml"]
    bad, seen = [], 0
    for rel in files:
        f = root / rel
        if not f.is_file():
            continue
        for cmd in shell_commands(f.read_text()):
            if "docker compose" in cmd and "clickhouse-client" in cmd:
                seen += 1
                if not (re.search(rf"(--user|-u)[ =]{re.escape(user)}\b", cmd)
                        and re.search(rf"--password[ =]{re.escape(password)}\b", cmd)):
                    bad.append(f"{rel}: {' '.join(cmd.split())[:120]}")
    c.check(f"docs: every compose clickhouse-client command (README.md, docs/deploy.md, the compose file) "
            f"passes --user {user} --password {password} (the compose defaults)",
            seen and not bad, f"{seen} commands; without credentials: {bad}")

    offenders = []
    texts = [(root / "README.md", True), (root / "docs" / "deploy.md", True)]
    for base in ("deploy",):
        for p in sorted((root / base).rglob("*")):
            if p.is_file() and p.suffix in (".yaml", ".yml", ".env", ".example", ".sh", "") \
                    and p.name not in ("Dockerfile",):
                texts.append((p, False))
    for p, md in texts:
        if p.is_file():
            for para in bare_offset_forms(p.read_text(), md):
                offenders.append(f"{p.relative_to(root)}: {para}")
    c.check("docs: --from/--to forms are documented only as the parser takes them "
            "(earliest, latest, RFC 3339, partition:offset; never a bare offset)",
            not offenders, f"{offenders}")

    deploy_md = root / "docs" / "deploy.md"
    doc = deploy_md.read_text() if deploy_md.is_file() else ""
    bad_values = []
    for m in re.finditer(r"(LAKEWRITER_FROM|LAKEWRITER_TO|BACKFILL_FROM|BACKFILL_TO)=([^\s`'\"]+)", doc):
        try:
            parse_bound(m.group(2))
        except ValueError as e:
            bad_values.append(f"{m.group(0)}: {e}")
    c.check("docs: docs/deploy.md's FROM/TO examples parse", not bad_values, f"{bad_values}")

    roots = sorted({p.parent.relative_to(root).as_posix() for p in (root / "deploy").rglob("kustomization.yaml")})
    missing = [r for r in roots if r not in doc]
    c.check("docs: docs/deploy.md covers every kustomization and component under deploy/", not missing,
            f"not mentioned: {missing}")
    host_ports = []
    for name, svc in services.items():
        for p in svc.get("ports", []) or []:
            parts = compose_default(str(p)).split(":")
            if len(parts) >= 2:
                host_ports.append((name, parts[-2]))
    unmentioned = [f"{n}:{p}" for n, p in host_ports if f"localhost:{p}" not in doc]
    c.check("docs: docs/deploy.md names every host port compose publishes (localhost:<port>)",
            host_ports and not unmentioned, f"not in docs/deploy.md: {unmentioned}")
    cjs = compact_cronjobs(root)
    if cjs:
        name = cjs[0]["metadata"]["name"]
        runs = re.findall(r"kubectl\b[^\n]*\bcreate job\b[^\n]*--from=cronjob/([\w.-]+)", doc)
        c.check("docs: docs/deploy.md shows a compaction run by hand (kubectl create job --from=cronjob/<the "
                "CronJob compact/ deploys>)", runs and all(r == name for r in runs),
                f"CronJob {name!r}, commands name {runs}")
    c.check("docs: docs/deploy.md explains cooperative-sticky with the KEDA autoscaler",
            "cooperative-sticky" in doc and "ScaledObject" in doc, "no cooperative-sticky / ScaledObject")


# ------------------------------------------------------------------ render

def kustomize_cmd() -> list[str] | None:
    if shutil.which("kubectl"):
        try:
            if subprocess.run(["kubectl", "kustomize", "--help"], capture_output=True, timeout=60).returncode == 0:
                return ["kubectl", "kustomize"]
        except (OSError, subprocess.SubprocessError):
            pass
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    return None


def render(cmd: list[str], path: Path) -> list[dict]:
    proc = subprocess.run(cmd + [str(path)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr.strip()[-500:])
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def check_render(root: Path, c: Checker) -> None:
    cmd = kustomize_cmd()
    if cmd is None:
        c.skip("render: kustomize renders of deploy/k8s, backfill/ and the examples",
               "neither kubectl nor kustomize installed")
        return

    def get(path: Path) -> list[dict] | None:
        try:
            return render(cmd, path)
        except (RuntimeError, subprocess.SubprocessError) as e:
            c.check(f"render: {path.relative_to(root) if path.is_relative_to(root) else path} renders", False, str(e))
            return None

    k8s = root / "deploy" / "k8s"
    base = get(k8s)
    if base is not None:
        kinds = sorted(d["kind"] for d in base)
        images = [ctr["image"] for d in base if d["kind"] == "Deployment" for ctr in pod_spec(d)["containers"]]
        c.check("render: deploy/k8s renders without a Job or CronJob and with a full, pinned image reference",
                "Job" not in kinds and "CronJob" not in kinds and images and all(full_reference(split_image(i)[0])
                                                      and tag_is_pinned(*split_image(i)) for i in images),
                f"kinds={kinds} images={images}")
    bf = get(k8s / "backfill")
    if bf is not None:
        cms = {d["metadata"]["name"] for d in bf if d["kind"] == "ConfigMap"}
        jobs = [d for d in bf if d["kind"] == "Job"]
        refs = [r["configMapRef"]["name"] for j in jobs for r in pod_spec(j)["containers"][0].get("envFrom", [])
                if "configMapRef" in r]
        images = [ctr["image"] for j in jobs for ctr in pod_spec(j)["containers"]]
        c.check("render: deploy/k8s/backfill renders one Job reading its generated ConfigMap, with a full image "
                "reference", len(jobs) == 1 and refs and set(refs) <= cms
                and all(full_reference(split_image(i)[0]) for i in images), f"configmaps={cms} refs={refs} images={images}")
    cp = get(k8s / "compact")
    if cp is not None:
        cjs = [d for d in cp if d["kind"] == "CronJob"]
        refs = [next(iter(r.values()))["name"] for j in cjs for r in pod_spec(j)["containers"][0].get("envFrom", [])]
        images = [ctr["image"] for j in cjs for ctr in pod_spec(j)["containers"]]
        c.check("render: deploy/k8s/compact renders one CronJob and nothing else, reading the base's ConfigMap "
                "and Secret, with a full, pinned image reference",
                len(cp) == 1 and len(cjs) == 1 and refs == ["lakewriter-config", "lakewriter-secrets"]
                and all(full_reference(split_image(i)[0]) and tag_is_pinned(*split_image(i)) for i in images),
                f"kinds={sorted(d['kind'] for d in cp)} refs={refs} images={images}")
    with tempfile.TemporaryDirectory() as tmp:
        ov = Path(tmp) / "backfill-ca"
        ov.mkdir()
        (ov / "kustomization.yaml").write_text(yaml.safe_dump({
            "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "resources": [os.path.relpath(k8s / "backfill", ov)],
            "components": [os.path.relpath(k8s / "kafka-ca", ov)]}))
        combo = get(ov)
    if combo is not None:
        job = next((d for d in combo if d["kind"] == "Job"), None)
        cm = next((d for d in combo if d["kind"] == "ConfigMap"), {})
        c.check("render: backfill/ with the kafka-ca component mounts the CA and points ssl.ca.location at it",
                job is not None and any(v.get("name") == "kafka-ca" for v in pod_spec(job).get("volumes", []))
                and "ssl.ca.location=" in str((cm.get("data") or {}).get("KAFKA_OPTS_TLS")),
                f"KAFKA_OPTS_TLS={(cm.get('data') or {}).get('KAFKA_OPTS_TLS')!r}")
    ex = root / "deploy" / "k8s-examples"
    for d in sorted(p for p in ex.iterdir() if (p / "kustomization.yaml").is_file()) if ex.is_dir() else []:
        docs = get(d)
        if docs is None:
            continue
        kinds = {x["kind"] for x in docs}
        deps = [x for x in docs if x["kind"] == "Deployment"]
        problems = []
        if "PodMonitor" in kinds:
            for x in deps:
                ann = x["spec"]["template"]["metadata"].get("annotations") or {}
                if any(k in ann for k in SCRAPE_ANNOTATIONS):
                    problems.append("prometheus.io annotations beside a PodMonitor")
        if "ScaledObject" in kinds:
            problems += ["replicas beside a ScaledObject" for x in deps if "replicas" in x["spec"]]
        for x in docs:
            for ctr in (pod_spec_or_none(x) or {}).get("containers", []) or []:
                if not full_reference(split_image(ctr["image"])[0]):
                    problems.append(f"image {ctr['image']}")
        c.check(f"render: {d.relative_to(root)} renders; no scrape annotations beside its PodMonitor, no "
                f"replicas beside its ScaledObject, full image references", not problems,
                f"kinds={sorted(kinds)} problems={problems}")


# --------------------------------------------------------------- self-test

# (what is broken, group, file relative to the repo, old text, new text, check expected to fail)
MUTATIONS = [
    ("runtime USER root", "dockerfile", "deploy/Dockerfile", "USER 10001:10001", "USER root",
     "dockerfile: runtime stage ends as a non-root USER"),
    ("build-essential in the runtime", "dockerfile", "deploy/Dockerfile",
     "      libssl3 \\\n", "      libssl3 \\\n      build-essential \\\n",
     "dockerfile: no compiler or build packages"),
    ("ENTRYPOINT /bin/sh", "dockerfile", "deploy/Dockerfile", 'ENTRYPOINT ["lakewriter"]', 'ENTRYPOINT ["/bin/sh"]',
     "dockerfile: ENTRYPOINT"),
    ("rust:1 builder", "dockerfile", "deploy/Dockerfile", "ARG RUST_VERSION=1.95.0", "ARG RUST_VERSION=1",
     "dockerfile: base images are pinned"),
    ("debian:bookworm-slim runtime", "dockerfile", "deploy/Dockerfile",
     "FROM debian:${DEBIAN_VERSION}-slim", "FROM debian:${DEBIAN_RELEASE}-slim",
     "dockerfile: builder FROM rust:<x.y.z>"),
    ("a runtime of another Debian release", "dockerfile", "deploy/Dockerfile",
     "ARG DEBIAN_VERSION=12.13", "ARG DEBIAN_VERSION=13.1", "dockerfile: builder and runtime are the same Debian"),
    ("a builder older than rust-version", "dockerfile", "deploy/Dockerfile",
     "ARG RUST_VERSION=1.95.0", "ARG RUST_VERSION=1.80.0", "dockerfile: the builder's Rust is at least"),
    ("grace period 20s < shutdown timeout", "k8s", "deploy/k8s/deployment.yaml",
     "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 20",
     "k8s: Deployment terminationGracePeriodSeconds"),
    ("readiness on /healthz", "k8s", "deploy/k8s/deployment.yaml", "path: /readyz", "path: /healthz",
     "k8s: Deployment liveness GET /healthz and readiness GET /readyz"),
    ("pdb.yaml not listed", "k8s", "deploy/k8s/kustomization.yaml", "  - pdb.yaml\n", "",
     "k8s: kustomization.yaml lists every manifest"),
    ("the backfill Job pinned to a fixed group", "k8s", "deploy/k8s/backfill/backfill.env",
     "LAKEWRITER_MODE=backfill\n", "LAKEWRITER_MODE=backfill\nLAKEWRITER_GROUP=lakewriter-backfill\n",
     "k8s: Job sets no LAKEWRITER_GROUP"),
    ("the backfill Job with the stream flush interval", "k8s", "deploy/k8s/backfill/backfill.env",
     "LAKEWRITER_MODE=backfill\n", "LAKEWRITER_MODE=backfill\nLAKEWRITER_FLUSH_INTERVAL=60s\n",
     "k8s: Job inherits no stream flush settings"),
    ("the backfill reading the stream ConfigMap", "k8s", "deploy/k8s/backfill/job.yaml",
     "                name: lakewriter-backfill\n", "                name: lakewriter-config\n",
     "k8s: Job takes its settings from ConfigMap"),
    ("a bare-offset LAKEWRITER_FROM", "k8s", "deploy/k8s/backfill/backfill.env",
     "LAKEWRITER_FROM=earliest", "LAKEWRITER_FROM=1200", "k8s: Job's LAKEWRITER_FROM/TO parse"),
    ("restartPolicy OnFailure", "k8s", "deploy/k8s/backfill/job.yaml",
     "restartPolicy: Never", "restartPolicy: OnFailure", "k8s: Job: restartPolicy Never, a podFailurePolicy"),
    ("no FailJob on exit 2", "k8s", "deploy/k8s/backfill/job.yaml", "values: [2]", "values: [4]",
     "k8s: Job: restartPolicy Never, a podFailurePolicy"),
    ("a suspended Job", "k8s", "deploy/k8s/backfill/job.yaml", "  backoffLimit: 3\n",
     "  suspend: true\n  backoffLimit: 3\n", "k8s: Job is not suspended"),
    ("the backfill Job back in the base", "k8s", "deploy/k8s/pdb.yaml",
     "  unhealthyPodEvictionPolicy: AlwaysAllow\n",
     "  unhealthyPodEvictionPolicy: AlwaysAllow\n---\napiVersion: batch/v1\nkind: Job\nmetadata:\n"
     "  name: lakewriter-backfill\nspec:\n  suspend: true\n  template: {spec: {containers: []}}\n",
     "k8s: the base holds no Job"),
    ("images: without newName", "k8s", "deploy/k8s/kustomization.yaml",
     "    newName: registry.example.com/lakewriter\n", "",
     "k8s: kustomization.yaml's images: turns the Deployment's image into a full"),
    ("SASL_SSL on port 9092", "k8s", "deploy/k8s/configmap.yaml",
     'LAKEWRITER_BROKERS: "kafka-bootstrap.kafka.svc:9093"', 'LAKEWRITER_BROKERS: "kafka-bootstrap.kafka.svc:9092"',
     "k8s: Kafka brokers' port fits security.protocol"),
    ("a CA location nothing mounts", "k8s", "deploy/k8s/configmap.yaml",
     'KAFKA_OPTS_TLS: ""', 'KAFKA_OPTS_TLS: "ssl.ca.location=/etc/kafka/ca.crt"',
     "k8s: ssl.ca.location, if set in the base"),
    ("scrape annotations on the Service", "k8s", "deploy/k8s/service.yaml",
     "    app.kubernetes.io/component: stream\nspec:",
     "    app.kubernetes.io/component: stream\n  annotations:\n    prometheus.io/scrape: \"true\"\nspec:",
     "k8s: prometheus.io scrape annotations only on the pods"),
    ("admin port 9100", "k8s", "deploy/k8s/configmap.yaml", 'LAKEWRITER_ADMIN_ADDR: "0.0.0.0:9464"',
     'LAKEWRITER_ADMIN_ADDR: "0.0.0.0:9100"', "k8s: Deployment's admin port"),
    ("PDB without unhealthyPodEvictionPolicy", "k8s", "deploy/k8s/pdb.yaml",
     "  unhealthyPodEvictionPolicy: AlwaysAllow\n", "", "k8s: PodDisruptionBudget lets unready pods be evicted"),
    ("no zone spread", "k8s", "deploy/k8s/deployment.yaml", "topologyKey: topology.kubernetes.io/zone",
     "topologyKey: kubernetes.io/os", "k8s: Deployment spreads its pods over zones"),
    ("the CA component mounting elsewhere", "k8s", "deploy/k8s/kafka-ca/kustomization.yaml",
     "mountPath: /etc/lakewriter/kafka-ca", "mountPath: /etc/ssl/kafka",
     "k8s: kafka-ca/ component sets ssl.ca.location"),
    ("KEDA beyond the partitions", "k8s", "deploy/k8s/keda/scaledobject.yaml", "maxReplicaCount: 12",
     "maxReplicaCount: 24", "k8s: ScaledObject's maxReplicaCount"),
    ("a lagThreshold under rate x interval", "k8s", "deploy/k8s/keda/scaledobject.yaml",
     'lagThreshold: "2000000"', 'lagThreshold: "100000"', "k8s: ScaledObject's lagThreshold"),
    ("no Kafka egress", "k8s", "deploy/k8s/network-policy/networkpolicy.yaml", "        - port: 9093\n",
     "        - port: 9092\n", "k8s: network-policy/ component"),
    ("compaction runs side by side", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "concurrencyPolicy: Forbid", "concurrencyPolicy: Allow", "k8s: CronJob: concurrencyPolicy Forbid"),
    ("compaction failures forgotten at once", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "failedJobsHistoryLimit: 3", "failedJobsHistoryLimit: 0", "k8s: CronJob: concurrencyPolicy Forbid"),
    ("the compactor restarted in place", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "restartPolicy: Never", "restartPolicy: OnFailure", "k8s: CronJob's Job: restartPolicy Never"),
    ("a compaction deadline shorter than the grace", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "activeDeadlineSeconds: 3600", "activeDeadlineSeconds: 120", "k8s: CronJob's Job: restartPolicy Never"),
    ("a scratch volume smaller than two merged files", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "sizeLimit: 1Gi", "sizeLimit: 256Mi", "k8s: CronJob's --work-dir is an emptyDir"),
    ("the compactor's scratch on the read-only root", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "--work-dir=/scratch", "--work-dir=/var/lib/lakewriter", "k8s: CronJob's --work-dir is an emptyDir"),
    ("a compaction min-age under the flush interval", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "--min-age=10m", "--min-age=30s", "k8s: CronJob's --min-age exceeds"),
    ("the compactor looping in a CronJob", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "- --once", "- --interval=5m", "k8s: CronJob runs `compact --once`"),
    ("the compactor below its peak memory", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "that stays within it.\n                  memory: 512Mi", "that stays within it.\n                  memory: 384Mi",
     "k8s: CronJob has requests/limits"),
    ("the compactor as root", "k8s", "deploy/k8s/compact/cronjob.yaml",
     "runAsNonRoot: true", "runAsNonRoot: false", "k8s: CronJob runs as uid 10001"),
    ("the compactor reaching Kafka", "k8s", "deploy/k8s/network-policy/networkpolicy.yaml",
     "        operator: NotIn\n        values: [compact]\n", "        operator: NotIn\n        values: [none]\n",
     "k8s: network-policy/ component: the compactor"),
    ("a latest mc image", "k8s", "deploy/k8s-examples/minio-bucket/job.yaml",
     "quay.io/minio/mc:RELEASE.2025-08-13T08-35-41Z", "minio/mc:latest", "k8s: every image in deploy/k8s"),
    ("service_healthy on a one-shot service", "compose", "deploy/docker-compose.yml",
     "condition: service_completed_successfully", "condition: service_healthy",
     "compose: every depends_on names an existing service"),
    ("stop_grace_period 10s", "compose", "deploy/docker-compose.yml",
     "stop_grace_period: 40s", "stop_grace_period: 10s", "compose: lakewriter stop_grace_period"),
    ("a table directory sql/ does not read", "compose", "deploy/docker-compose.yml",
     "LAKEWRITER_TABLE: clickstream\n", "LAKEWRITER_TABLE: events\n",
     "compose: the table directory sql/ reads is LAKEWRITER_TABLE"),
    ("minio:latest", "compose", "deploy/docker-compose.yml",
     "quay.io/minio/minio:RELEASE.2025-09-07T16-13-09Z", "minio/minio:latest",
     "compose: every pulled image"),
    ("an untagged kafka-ui", "compose", "deploy/docker-compose.yml",
     "kafbat/kafka-ui:v1.5.0", "kafbat/kafka-ui", "compose: every pulled image"),
    ("provectuslabs/kafka-ui", "compose", "deploy/docker-compose.yml",
     "kafbat/kafka-ui:v1.5.0", "provectuslabs/kafka-ui:v0.7.2", "compose: kafka-ui is kafbat/kafka-ui"),
    ("a floating ClickHouse minor in .env.example", "compose", "deploy/.env.example",
     "CLICKHOUSE_IMAGE=clickhouse/clickhouse-server:25.8.29.51", "CLICKHOUSE_IMAGE=clickhouse/clickhouse-server:25.8",
     "compose: every pulled image"),
    ("the backfill with a fixed group", "compose", "deploy/docker-compose.yml",
     "      LAKEWRITER_MODE: backfill\n", "      LAKEWRITER_MODE: backfill\n      LAKEWRITER_GROUP: lakewriter-backfill\n",
     "compose: the backfill sets no LAKEWRITER_GROUP"),
    ("sql/ mounted as the init directory", "compose", "deploy/docker-compose.yml",
     "      - ./clickhouse/initdb:/docker-entrypoint-initdb.d:ro\n      - ../sql:/lake-sql:ro\n",
     "      - ../sql:/docker-entrypoint-initdb.d:ro\n",
     "compose: clickhouse/clickhouse-server runs sql/ through deploy/clickhouse/initdb"),
    ("an init script that keeps the shipped keys", "compose", "deploy/clickhouse/initdb/lake-sql.sh",
     'text=${text//"$shipped_secret"/"$secret"}', "true",
     "compose: ClickHouse's init script runs sql/ with the environment's S3 keys"),
    ("admin port 9100 in compose", "compose", "deploy/docker-compose.yml",
     "      LAKEWRITER_ADMIN_ADDR: 0.0.0.0:9464\n      LAKEWRITER_LOG_FORMAT",
     "      LAKEWRITER_ADMIN_ADDR: 0.0.0.0:9100\n      LAKEWRITER_LOG_FORMAT",
     "compose: lakewriter's admin port is not node_exporter's 9100"),
    ("Kafka published on the test ground's port", "compose", "deploy/docker-compose.yml",
     '"${KAFKA_HOST_PORT:-39092}:19092"', '"${KAFKA_HOST_PORT:-19092}:19092"',
     "compose: published host ports do not collide"),
    ("the compactor in --once mode", "compose", "deploy/docker-compose.yml",
     "      - compact\n      - --interval\n      - ${COMPACT_INTERVAL:-5m}\n", "      - compact\n      - --once\n",
     "compose: the compactor runs `compact --interval`"),
    ("the compactor on another lake", "compose", "deploy/docker-compose.yml",
     "    environment:\n      <<: *s3-env\n      LAKEWRITER_LAKE: s3://lake/events\n      LAKEWRITER_S3_PATH_STYLE",
     "    environment:\n      <<: *s3-env\n      LAKEWRITER_LAKE: s3://lake/other\n      LAKEWRITER_S3_PATH_STYLE",
     "compose: the compactor runs `compact --interval`"),
    ("a compactor min-age under the flush interval", "compose", "deploy/docker-compose.yml",
     "${COMPACT_MIN_AGE:-10m}", "${COMPACT_MIN_AGE:-20s}", "compose: the compactor's --min-age"),
    ("the compactor's healthcheck on /readyz", "compose", "deploy/docker-compose.yml",
     "GET /healthz HTTP/1.0", "GET /readyz HTTP/1.0", "compose: the compactor's healthcheck"),
    ("a by-hand compaction from a CronJob that does not exist", "docs", "docs/deploy.md",
     "--from=cronjob/lakewriter-compact", "--from=cronjob/compact", "docs: docs/deploy.md shows a compaction run"),
    ("README's ClickHouse command without credentials", "docs", "README.md",
     "clickhouse-client --user lake --password lake -q", "clickhouse-client -q",
     "docs: every compose clickhouse-client command"),
    ("a bare offset in the docs", "docs", "docs/deploy.md", "an RFC 3339 time", "an offset or an RFC 3339 time",
     "docs: --from/--to forms are documented only as the parser takes them"),
    ("<offset> in backfill.env's comment", "docs", "deploy/k8s/backfill/backfill.env",
     "# `latest` (the high-water marks seen at start), an RFC 3339 time",
     "# `latest`, <offset>, an RFC 3339 time", "docs: --from/--to forms are documented only"),
    ("an alert on a metric lakewriter does not export", "monitoring", "deploy/k8s/monitoring/prometheusrule.yaml",
     "rate(lakewriter_upload_retries_total{", "rate(lakewriter_s3_retries_total{",
     "monitoring: the rules use only metrics src/metrics.rs exports"),
    ("a stalled-commit threshold of 5 flush intervals", "monitoring",
     "deploy/k8s/monitoring/prometheusrule.yaml", "/ 1000) > 180", "/ 1000) > 300",
     "monitoring: the stalled-commit threshold is 3x"),
    ("a dashboard panel on an unknown metric", "monitoring", "deploy/k8s/monitoring/lakewriter-dashboard.json",
     "lakewriter_buffered_bytes{", "lakewriter_buffer_bytes{",
     "monitoring: dashboard queries use only metrics"),
    ("two dashboard panels with one id", "monitoring", "deploy/k8s/monitoring/lakewriter-dashboard.json",
     '"id": 3,', '"id": 2,', "monitoring: dashboard panels have unique ids"),
    ("scrape annotations left beside the PodMonitor", "monitoring", "deploy/k8s/monitoring/kustomization.yaml",
     "      - op: remove\n        path: /spec/template/metadata/annotations/prometheus.io~1scrape\n", "",
     "monitoring: the component removes the pods' prometheus.io annotations"),
    ("the compaction pods left unscraped", "monitoring", "deploy/k8s/monitoring/podmonitor.yaml",
     "values: [stream, backfill, compact]", "values: [stream, backfill]", "monitoring: PodMonitor selects"),
    ("a compaction alert on another CronJob's Jobs", "monitoring", "deploy/k8s/monitoring/prometheusrule.yaml",
     'owner_name="lakewriter-compact"', 'owner_name="compact"', "monitoring: alerts cover the compaction CronJob"),
    ("the PodMonitor on a port the pods lack", "monitoring", "deploy/k8s/monitoring/podmonitor.yaml",
     "    - port: admin", "    - port: metrics", "monitoring: PodMonitor selects"),
]

# Files the checks read; the self-test copies them (read-only) beside the broken copy.
SELFTEST_FILES = ["deploy", "sql", "src", "Cargo.toml", "README.md", "docs/deploy.md", ".dockerignore",
                  "scripts/stack.sh", "scripts/bench.sh", "tests/deploy/prometheus-rules.test.yaml"]


def self_test(root: Path, c: Checker) -> None:
    """Each check that matters must fail on a deliberately broken copy."""
    import contextlib
    import io

    groups = {"compose": check_compose, "k8s": check_k8s, "monitoring": check_monitoring,
              "dockerfile": check_dockerfile, "docs": check_docs}
    for label, group, rel, old, new, expect in MUTATIONS:
        if "sql/" in expect and not (root / "sql" / "01_named_collection.sql").is_file():
            c.skip(f"self-test: {rel} with {label}", "no sql/ to compare with")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            tmp_root = Path(tmp)
            for item in SELFTEST_FILES:
                src, dst = root / item, tmp_root / item
                if src.is_dir():
                    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("target", "__pycache__"))
                elif src.is_file():
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(src, dst)
            target = tmp_root / rel
            text = target.read_text() if target.is_file() else ""
            if old not in text:
                c.check(f"self-test: mutation of {rel} applies ({label})", False, f"{old!r} not found")
                continue
            target.write_text(text.replace(old, new, 1))
            inner = Checker()
            with contextlib.redirect_stdout(io.StringIO()):
                try:
                    groups[group](tmp_root, inner)
                except Exception as err:  # a crash on broken input counts as a failure
                    inner.check(f"{group}: checks ran to completion", False, str(err))
            failed = [name for ok, name, _ in inner.results if not ok]
            c.check(f"self-test: {rel} with {label} fails '{expect}'",
                    any(name.startswith(expect) for name in failed), f"failed checks: {failed}")


# ------------------------------------------------------------------- tools

def list_manifests(root: Path) -> int:
    """Manifest files whose documents are all of built-in kinds (for kubernetes-validate);
    files with CRD kinds are named on stderr."""
    for p in manifest_files(root):
        docs = load_yaml_docs(p)
        if docs and all(is_builtin(d) for d in docs):
            print(p.relative_to(root))
        else:
            kinds = sorted({d.get("kind") for d in docs if not is_builtin(d)})
            print(f"{p.relative_to(root)}: {', '.join(kinds)}", file=sys.stderr)
    return 0


def builtin_only() -> int:
    docs = [d for d in yaml.safe_load_all(sys.stdin) if d]
    keep = [d for d in docs if is_builtin(d)]
    dropped = sorted({d.get("kind") for d in docs if not is_builtin(d)})
    if dropped:
        print(f"without schema, not validated here: {', '.join(dropped)}", file=sys.stderr)
    yaml.safe_dump_all(keep, sys.stdout, sort_keys=False)
    return 0


def extract_rules(out: Path, root: Path) -> int:
    path = root / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
    docs = [d for d in load_yaml_docs(path) if d.get("kind") == "PrometheusRule"]
    if len(docs) != 1:
        print(f"{path}: expected one PrometheusRule, found {len(docs)}", file=sys.stderr)
        return 1
    out.write_text(yaml.safe_dump(docs[0]["spec"], sort_keys=False))
    return 0


def main() -> int:
    groups = {"compose": check_compose, "k8s": check_k8s, "monitoring": check_monitoring,
              "dockerfile": check_dockerfile, "docs": check_docs, "render": check_render,
              "selftest": self_test}
    if len(sys.argv) >= 2 and sys.argv[1] == "manifests":
        return list_manifests(Path(sys.argv[2] if len(sys.argv) > 2 else os.getcwd()).resolve())
    if len(sys.argv) >= 2 and sys.argv[1] == "builtin-only":
        return builtin_only()
    if len(sys.argv) >= 3 and sys.argv[1] == "extract-rules":
        return extract_rules(Path(sys.argv[2]), Path(sys.argv[3] if len(sys.argv) > 3 else os.getcwd()).resolve())
    if len(sys.argv) < 2 or sys.argv[1] not in groups:
        print(__doc__, file=sys.stderr)
        return 2
    root = Path(sys.argv[2] if len(sys.argv) > 2 else os.getcwd()).resolve()
    c = Checker()
    try:
        groups[sys.argv[1]](root, c)
    except Exception as err:  # a crash is a failed check, not a silent pass
        c.check(f"{sys.argv[1]}: checks ran to completion", False, f"{type(err).__name__}: {err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
