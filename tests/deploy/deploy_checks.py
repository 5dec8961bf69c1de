#!/usr/bin/env python3
"""Offline consistency checks of deploy/ (called by tests/deploy/validate.sh).

Usage: deploy_checks.py {compose|k8s|dockerfile|selftest} [REPO_ROOT]

Prints one line per check, "PASS: <what>", "FAIL: <what> -- <why>" or
"SKIP: <what> -- <why>", and exits
0 (the caller counts the lines). Schema validation is done elsewhere
(docker-compose config, kubernetes-validate); these checks cover what a schema
cannot: the settings lakewriter needs, and that the pieces agree with each
other (ports, grace periods, memory budget, names).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from pathlib import Path

import yaml

# Every environment variable the binary reads (one per flag of `run`).
KNOWN_LAKEWRITER_ENV = {
    "LAKEWRITER_MODE",
    "LAKEWRITER_BROKERS",
    "LAKEWRITER_TOPICS",
    "LAKEWRITER_GROUP",
    "LAKEWRITER_LAKE",
    "LAKEWRITER_TABLE",
    "LAKEWRITER_EVENT_TYPE_POINTER",
    "LAKEWRITER_EVENT_TIME_POINTER",
    "LAKEWRITER_EVENT_TIME_FORMAT",
    "LAKEWRITER_FLUSH_ROWS",
    "LAKEWRITER_FLUSH_BYTES",
    "LAKEWRITER_FLUSH_INTERVAL",
    "LAKEWRITER_MAX_BUFFER_BYTES",
    "LAKEWRITER_COMPRESSION",
    "LAKEWRITER_KAFKA_OPTS",
    "LAKEWRITER_S3_PATH_STYLE",
    "LAKEWRITER_ADMIN_ADDR",
    "LAKEWRITER_LOG_FORMAT",
    "LAKEWRITER_SHUTDOWN_TIMEOUT",
    "LAKEWRITER_FROM",
    "LAKEWRITER_TO",
}
ADMIN_PORT = 9100
DEFAULT_SHUTDOWN_TIMEOUT_S = 25.0
DEFAULT_MAX_BUFFER = 256 * 2**20
COMPILER_PACKAGES = {
    "gcc", "g++", "cc", "clang", "make", "cmake", "build-essential", "cargo",
    "rustc", "rustup", "pkg-config", "libssl-dev", "zlib1g-dev", "binutils",
}


class Checker:
    def __init__(self) -> None:
        self.results: list[tuple[bool, str, str]] = []

    def check(self, name: str, ok: bool, why: str = "") -> bool:
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
    """'25s', '1m30s', '500ms', '60' -> seconds."""
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


def load_yaml_docs(path: Path) -> list:
    with path.open() as fh:
        return [d for d in yaml.safe_load_all(fh) if d is not None]


# ----------------------------------------------------------------- compose

def check_compose(root: Path, c: Checker) -> None:
    path = root / "deploy" / "docker-compose.yml"
    text = path.read_text()
    doc = yaml.safe_load(text)
    services = doc.get("services", {})

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
    c.check("compose: kafka-ui is provectuslabs/kafka-ui pointed at kafka:9092",
            "provectuslabs/kafka-ui" in str(ui.get("image", ""))
            and "kafka:9092" in env_list_to_dict(ui.get("environment")).values(),
            f"image={ui.get('image')!r}")

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

    ch = services.get("clickhouse", {})
    vols = [str(v) for v in ch.get("volumes", [])]
    c.check("compose: clickhouse/clickhouse-server mounts ../sql at /docker-entrypoint-initdb.d",
            "clickhouse/clickhouse-server" in str(ch.get("image", ""))
            and any(v.split(":")[0] == "../sql" and v.split(":")[1] == "/docker-entrypoint-initdb.d" for v in vols),
            f"volumes={vols}")

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

    # The lake layout must be the one sql/ (mounted into ClickHouse) reads.
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

    ch_env = env_list_to_dict(ch.get("environment"))
    ch_user = ch_env.get("CLICKHOUSE_USER", "default")
    users_xml = path.parent / "clickhouse" / "users.d" / "lake-user.xml"
    grants = users_xml.read_text() if users_xml.is_file() else ""
    c.check("compose: the ClickHouse init user may create named collections (sql/ needs it)",
            ch_env.get("CLICKHOUSE_DEFAULT_ACCESS_MANAGEMENT") in ("1", 1)
            and re.search(rf"<{re.escape(ch_user)}>.*<named_collection_control>1</named_collection_control>",
                          grants, re.S) is not None
            and any(v.split(":")[1:2] == ["/etc/clickhouse-server/users.d/lake-user.xml"] for v in vols),
            f"user={ch_user!r}, users.d grants found={bool(grants)}")

    try:
        grace = parse_seconds(lw.get("stop_grace_period", "10s"))
        timeout = parse_seconds(lenv.get("LAKEWRITER_SHUTDOWN_TIMEOUT", str(DEFAULT_SHUTDOWN_TIMEOUT_S)))
        ok, why = grace > timeout, f"stop_grace_period {grace}s <= shutdown timeout {timeout}s"
    except ValueError as e:
        ok, why = False, str(e)
    c.check("compose: lakewriter stop_grace_period exceeds LAKEWRITER_SHUTDOWN_TIMEOUT", ok, why)

    hc = " ".join(map(str, (lw.get("healthcheck") or {}).get("test", [])))
    c.check("compose: lakewriter healthcheck probes /readyz on port 9100 without curl/wget",
            f"/{ADMIN_PORT}" in hc and "/readyz" in hc and "curl" not in hc and "wget" not in hc, hc)

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
                      if k.startswith("LAKEWRITER_") and k not in KNOWN_LAKEWRITER_ENV})
    c.check("compose: every LAKEWRITER_* container variable is one the binary reads", not unknown,
            f"unknown {unknown}")

    bf = env_list_to_dict(services.get("backfill", {}).get("environment"))
    c.check("compose: the backfill profile runs backfill mode with its own group and table",
            "backfill" in services and bf.get("LAKEWRITER_MODE") == "backfill"
            and bf.get("LAKEWRITER_GROUP") not in (None, lenv.get("LAKEWRITER_GROUP"))
            and bf.get("LAKEWRITER_TABLE") not in (None, lenv.get("LAKEWRITER_TABLE")),
            f"backfill env={bf}")

    used = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", text))
    env_example = root / "deploy" / ".env.example"
    documented = set()
    if env_example.is_file():
        for line in env_example.read_text().splitlines():
            m = re.match(r"\s*([A-Za-z_][A-Za-z0-9_]*)=", line)
            if m:
                documented.add(m.group(1))
    c.check("compose: deploy/.env.example sets every ${VAR} the compose file interpolates, and no other",
            env_example.is_file() and used == documented,
            f"undocumented {sorted(used - documented)}; unused {sorted(documented - used)}")
    unbraced = re.findall(r"(?<!\$)\$\{[A-Za-z_][A-Za-z0-9_]*\}", text)
    c.check("compose: every interpolation has a default (${VAR:-default}), so no .env is required",
            not unbraced, f"without default: {unbraced}")


# --------------------------------------------------------------------- k8s

def check_k8s(root: Path, c: Checker) -> None:
    kdir = root / "deploy" / "k8s"
    kfile = kdir / "kustomization.yaml"
    kust = yaml.safe_load(kfile.read_text())
    listed = [str(r) for r in kust.get("resources", [])]
    on_disk = sorted(p.name for p in kdir.iterdir()
                     if p.suffix in (".yaml", ".yml") and p.name not in ("kustomization.yaml", "kustomization.yml"))
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
    c.check("k8s: manifests are namespace-agnostic (no metadata.namespace)", not namespaced,
            f"namespaced: {namespaced}")

    kinds = {k: len(v) for k, v in objs.items()}
    c.check("k8s: one each of Deployment, ConfigMap, Secret, Service, PodDisruptionBudget, Job",
            all(kinds.get(k) == 1 for k in ("Deployment", "ConfigMap", "Secret", "Service",
                                             "PodDisruptionBudget", "Job")), f"kinds={kinds}")
    if not all(kinds.get(k) == 1 for k in ("Deployment", "ConfigMap", "Secret", "Service",
                                           "PodDisruptionBudget", "Job")):
        return

    dep, cm, sec = objs["Deployment"][0], objs["ConfigMap"][0], objs["Secret"][0]
    svc, pdb, job = objs["Service"][0], objs["PodDisruptionBudget"][0], objs["Job"][0]
    cmdata = {k: str(v) for k, v in (cm.get("data") or {}).items()}
    secdata = dict(sec.get("stringData") or {}) | dict(sec.get("data") or {})

    unknown = sorted(k for k in cmdata if k.startswith("LAKEWRITER_") and k not in KNOWN_LAKEWRITER_ENV)
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

    def pod_checks(kind: str, obj: dict) -> dict:
        spec = obj["spec"]["template"]["spec"]
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
        c.check(f"k8s: {kind} takes its settings from ConfigMap {cm['metadata']['name']} and "
                f"Secret {sec['metadata']['name']}",
                refs == [cm["metadata"]["name"], sec["metadata"]["name"]], f"envFrom={refs}")
        # $(VAR) references must resolve from envFrom or earlier env entries.
        defined = set(cmdata) | set(secdata)
        unresolved = []
        for e in ctr.get("env", []):
            for ref in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", str(e.get("value", ""))):
                if ref not in defined:
                    unresolved.append(f"{e['name']} -> {ref}")
            defined.add(e["name"])
        c.check(f"k8s: {kind}'s $(VAR) references resolve from the ConfigMap/Secret", not unresolved,
                f"unresolved {unresolved}")
        unknown_env = [k for k in env if k.startswith("LAKEWRITER_") and k not in KNOWN_LAKEWRITER_ENV]
        c.check(f"k8s: {kind}'s LAKEWRITER_* env entries are variables the binary reads", not unknown_env,
                f"unknown {unknown_env}")
        try:
            grace = float(spec.get("terminationGracePeriodSeconds", 30))
            timeout = parse_seconds(env.get("LAKEWRITER_SHUTDOWN_TIMEOUT")
                                    or cmdata.get("LAKEWRITER_SHUTDOWN_TIMEOUT") or "25s")
            ok, why = grace > timeout + 5, f"grace {grace}s vs shutdown timeout {timeout}s"
        except ValueError as err:
            ok, why = False, str(err)
        c.check(f"k8s: {kind} terminationGracePeriodSeconds exceeds LAKEWRITER_SHUTDOWN_TIMEOUT by > 5s",
                ok, why)
        try:
            limit = parse_bytes(ctr["resources"]["limits"]["memory"])
            request = parse_bytes(ctr["resources"]["requests"]["memory"])
            cap = parse_bytes(env.get("LAKEWRITER_MAX_BUFFER_BYTES")
                              or cmdata.get("LAKEWRITER_MAX_BUFFER_BYTES") or str(DEFAULT_MAX_BUFFER))
            ok = 1.5 * cap <= limit <= 4 * cap and request <= limit and "cpu" in ctr["resources"]["limits"]
            why = f"limit {limit >> 20}Mi, request {request >> 20}Mi, buffer cap {cap >> 20}MiB"
        except (KeyError, ValueError) as err:
            ok, why = False, f"resources incomplete: {err}"
        c.check(f"k8s: {kind} has requests/limits, memory limit 1.5x-4x LAKEWRITER_MAX_BUFFER_BYTES",
                ok, why)
        return {"spec": spec, "ctr": ctr, "env": env}

    d = pod_checks("Deployment", dep)
    j = pod_checks("Job", job)

    c.check("k8s: Deployment runs 2 replicas in stream mode (shared group from the ConfigMap)",
            dep["spec"].get("replicas") == 2
            and d["env"].get("LAKEWRITER_MODE", cmdata.get("LAKEWRITER_MODE")) == "stream"
            and (d["ctr"].get("args") or ["run"])[0] == "run",
            f"replicas={dep['spec'].get('replicas')} env={d['env']}")

    admin = cmdata.get("LAKEWRITER_ADMIN_ADDR", f"0.0.0.0:{ADMIN_PORT}")
    admin_port = int(admin.rsplit(":", 1)[1])
    ports = {p.get("name"): p["containerPort"] for p in d["ctr"].get("ports", [])}

    def probe_target(probe: dict | None) -> tuple:
        hg = (probe or {}).get("httpGet") or {}
        port = hg.get("port")
        return hg.get("path"), ports.get(port, port)

    c.check("k8s: Deployment liveness GET /healthz and readiness GET /readyz on the admin port",
            probe_target(d["ctr"].get("livenessProbe")) == ("/healthz", admin_port)
            and probe_target(d["ctr"].get("readinessProbe")) == ("/readyz", admin_port),
            f"liveness={probe_target(d['ctr'].get('livenessProbe'))} "
            f"readiness={probe_target(d['ctr'].get('readinessProbe'))} admin port {admin_port}")

    pod_labels = dep["spec"]["template"]["metadata"]["labels"]
    sel = dep["spec"]["selector"]["matchLabels"]
    c.check("k8s: Deployment selector matches its pod labels",
            all(pod_labels.get(k) == v for k, v in sel.items()), f"selector={sel} labels={pod_labels}")

    ann = svc["metadata"].get("annotations") or {}
    sport = (svc["spec"].get("ports") or [{}])[0]
    c.check("k8s: Service selects the Deployment's pods and carries prometheus.io scrape annotations",
            all(pod_labels.get(k) == v for k, v in (svc["spec"].get("selector") or {}).items())
            and bool(svc["spec"].get("selector"))
            and ann.get("prometheus.io/scrape") == "true"
            and ann.get("prometheus.io/port") == str(admin_port)
            and ann.get("prometheus.io/path") == "/metrics"
            and ports.get(sport.get("targetPort"), sport.get("targetPort")) == admin_port,
            f"selector={svc['spec'].get('selector')} annotations={ann} port={sport}")

    c.check("k8s: PodDisruptionBudget maxUnavailable 1 over the Deployment's pods",
            pdb["spec"].get("maxUnavailable") == 1
            and pdb["spec"]["selector"]["matchLabels"] == sel, f"spec={pdb['spec']}")

    c.check("k8s: Job runs backfill mode (LAKEWRITER_MODE=backfill), restartPolicy OnFailure, "
            "backoffLimit set, same image as the Deployment",
            j["env"].get("LAKEWRITER_MODE") == "backfill"
            and j["spec"].get("restartPolicy") == "OnFailure"
            and isinstance(job["spec"].get("backoffLimit"), int)
            and j["ctr"]["image"] == d["ctr"]["image"],
            f"env={j['env']} restartPolicy={j['spec'].get('restartPolicy')} "
            f"backoffLimit={job['spec'].get('backoffLimit')}")
    c.check("k8s: Job uses its own LAKEWRITER_GROUP and LAKEWRITER_TABLE, not the Deployment's",
            j["env"].get("LAKEWRITER_GROUP") not in (None, cmdata.get("LAKEWRITER_GROUP"))
            and j["env"].get("LAKEWRITER_TABLE") not in (None, cmdata.get("LAKEWRITER_TABLE")),
            f"job env={j['env']} configmap group={cmdata.get('LAKEWRITER_GROUP')!r}")
    c.check("k8s: Job is created suspended (apply -k never starts a backfill by itself)",
            job["spec"].get("suspend") is True, f"suspend={job['spec'].get('suspend')}")


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
    c.check("dockerfile: builder FROM rust:<version>-bookworm", re.fullmatch(r"rust:[\w.]+-bookworm", bfrom) is not None,
            bfrom)
    c.check("dockerfile: runtime FROM debian:bookworm-slim", rfrom == "debian:bookworm-slim", rfrom)

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
    c.check('dockerfile: ENTRYPOINT ["lakewriter"], CMD ["run"], EXPOSE 9100',
            ep and ep[-1].replace(" ", "") == '["lakewriter"]'
            and cmd and cmd[-1].replace(" ", "") == '["run"]' and "9100" in expose,
            f"ENTRYPOINT {ep} CMD {cmd} EXPOSE {expose}")

    unpinned = [expand(s[0][1].split()[0]) for s in stages if expand(s[0][1].split()[0]).endswith(":latest")
                or ":" not in expand(s[0][1].split()[0])]
    c.check("dockerfile: base images carry a tag (not :latest)", not unpinned, f"{unpinned}")

    di = root / ".dockerignore"
    entries = {ln.strip().rstrip("/") for ln in di.read_text().splitlines()} if di.is_file() else set()
    c.check(".dockerignore: excludes target/, .git and lake/ from the build context",
            {"target", ".git", "lake"} <= entries, f"entries={sorted(entries)}")


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
    ("grace period 20s < shutdown timeout", "k8s", "deploy/k8s/deployment.yaml",
     "terminationGracePeriodSeconds: 60", "terminationGracePeriodSeconds: 20",
     "k8s: Deployment terminationGracePeriodSeconds"),
    ("readiness on /healthz", "k8s", "deploy/k8s/deployment.yaml", "path: /readyz", "path: /healthz",
     "k8s: Deployment liveness GET /healthz and readiness GET /readyz"),
    ("pdb.yaml not listed", "k8s", "deploy/k8s/kustomization.yaml", "  - pdb.yaml\n", "",
     "k8s: kustomization.yaml lists every manifest"),
    ("service_healthy on a one-shot service", "compose", "deploy/docker-compose.yml",
     "condition: service_completed_successfully", "condition: service_healthy",
     "compose: every depends_on names an existing service"),
    ("stop_grace_period 10s", "compose", "deploy/docker-compose.yml",
     "stop_grace_period: 40s", "stop_grace_period: 10s", "compose: lakewriter stop_grace_period"),
    ("a table directory sql/ does not read", "compose", "deploy/docker-compose.yml",
     "LAKEWRITER_TABLE: clickstream\n", "LAKEWRITER_TABLE: events\n",
     "compose: the table directory sql/ reads is LAKEWRITER_TABLE"),
]


def self_test(root: Path, c: Checker) -> None:
    """Each check that matters must fail on a deliberately broken copy."""
    import contextlib
    import io
    import shutil
    import tempfile

    groups = {"compose": check_compose, "k8s": check_k8s, "dockerfile": check_dockerfile}
    for label, group, rel, old, new, expect in MUTATIONS:
        if "sql/" in expect and not (root / "sql" / "01_named_collection.sql").is_file():
            c.skip(f"self-test: {rel} with {label}", "no sql/ to compare with")
            continue
        with tempfile.TemporaryDirectory() as tmp:
            tmp_root = Path(tmp)
            shutil.copytree(root / "deploy", tmp_root / "deploy")
            if (root / "sql").is_dir():
                shutil.copytree(root / "sql", tmp_root / "sql")
            if (root / ".dockerignore").is_file():
                shutil.copy(root / ".dockerignore", tmp_root / ".dockerignore")
            target = tmp_root / rel
            text = target.read_text()
            if old not in text:
                c.check(f"self-test: mutation of {rel} applies", False, f"{old!r} not found")
                continue
            target.write_text(text.replace(old, new, 1))
            inner = Checker()
            with contextlib.redirect_stdout(io.StringIO()):
                groups[group](tmp_root, inner)
            failed = [name for ok, name, _ in inner.results if not ok]
            c.check(f"self-test: {rel} with {label} fails '{expect}'",
                    any(name.startswith(expect) for name in failed), f"failed checks: {failed}")


def main() -> int:
    groups = {"compose": check_compose, "k8s": check_k8s, "dockerfile": check_dockerfile,
              "selftest": self_test}
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
