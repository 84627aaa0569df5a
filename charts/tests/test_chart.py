"""The Helm chart, rendered and linted by real Helm (Helm 4's Go SDK through PyPI's
helm-python-sdk, no helm binary), every rendered object validated against the Kubernetes API
schemas (PyPI's kubernetes-validate, strict: unknown fields are errors), and assertions on what the
objects say. When the built service and plugins are there (scripts/dev.sh test builds them first),
the rendered container's environment also starts the real `sluice serve` and its probe paths are
asked.

Run: scripts/test-chart.sh (plain unittest; the venv comes from scripts/install-toolchain.sh).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest
import urllib.error
import urllib.request
from pathlib import Path

import helm_python as helm
import kubernetes_validate
import yaml

CHART = Path(__file__).resolve().parent.parent / "sluice"
RELEASE = "cobi-dashboard"
NAMESPACE = "cobi"
# The Kubernetes version the objects are validated against: the newest the schemas carry.
KUBE_VERSION = os.environ.get("SLUICE_CHART_KUBE_VERSION", kubernetes_validate.latest_version())
# Custom resources: kubernetes-validate has only the core API's schemas. These are checked by the
# explicit assertions below (fields, references) instead.
CRD_KINDS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
}
# The seed's Secret (HOST, PORT, CONNECT_SERVICE_TOKEN, S3_ENDPOINT ...).
SECRET = "cobi-connect-secrets"
SERVICES_REGISTRY = {
    "services": [
        {
            "id": "purchase-orders",
            "name": "Purchase orders",
            "base_url": "http://127.0.0.1:9",
            "connector": {
                "kind": "http-json",
                "streams": [
                    {"name": "purchase_orders", "path": "/api/purchase-orders", "records_pointer": "/data"}
                ],
            },
            "env": ["PO_API_KEY"],
        }
    ]
}
WITH_DB = {"connect": {"replicaCount": 3, "database": {"existingSecret": "connect-db"}}}
SCENARIOS: dict[str, dict] = {
    "default": {},
    "gateway": {
        "gateway": {
            "connect": {
                "enabled": True,
                "parentRefs": [{"name": "cobi-gateway", "namespace": "gateway-system"}],
                "hostnames": ["connect.example.com"],
            }
        }
    },
    "ingress": {
        "ingress": {
            "connect": {
                "enabled": True,
                "className": "nginx",
                "host": "connect.example.com",
                "tls": [{"secretName": "connect-tls", "hosts": ["connect.example.com"]}],
            }
        }
    },
    "plugins-configmap": {"connect": {"plugins": {"volume": {"configMap": {"name": "my-connectors"}}}}},
    "plugins-pvc": {
        "connect": {"plugins": {"volume": {"persistentVolumeClaim": {"claimName": "connectors", "readOnly": True}}}}
    },
    "plugins-image": {
        "connect": {
            "plugins": {
                "volume": {"image": {"reference": "registry.example/connectors:1", "pullPolicy": "IfNotPresent"}}
            }
        }
    },
    "services-registry": {"connect": {"services": {"registry": SERVICES_REGISTRY}}},
    "services-registry-yaml": {"connect": {"services": {"registryYaml": yaml.safe_dump(SERVICES_REGISTRY)}}},
    "services-existing": {"connect": {"services": {"existingConfigMap": "my-services"}}},
    "replicas-with-database": WITH_DB,
    "servicemonitor": {"connect": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}},
}


def render(values: dict | None = None) -> list[dict]:
    """The chart's objects for `values` (release cobi-dashboard in namespace cobi)."""
    with helm.Chart.load(CHART) as chart:
        manifests = chart.render(values or {}, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc is not None:
                doc["__template"] = path
                objects.append(doc)
    return objects


def by_kind(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def one(objects: list[dict], kind: str) -> dict:
    found = by_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}: {[o['kind'] for o in objects]}"
    return found[0]


def container(objects: list[dict]) -> dict:
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert len(pod["containers"]) == 1
    return pod["containers"][0]


def env_of(c: dict) -> dict[str, dict]:
    return {e["name"]: e for e in c.get("env", [])}


def mount_for(objects: list[dict], path: str) -> tuple[dict, dict]:
    """The volume mount holding `path` (the deepest one) and its volume."""
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    mounts = [m for m in container(objects)["volumeMounts"] if path == m["mountPath"] or path.startswith(m["mountPath"].rstrip("/") + "/")]
    assert mounts, f"{path} is on no volume (the root filesystem is read-only)"
    mount = max(mounts, key=lambda m: len(m["mountPath"]))
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return mount, volume


class Validation(unittest.TestCase):
    def test_every_scenario_renders_and_validates_against_the_kubernetes_schemas(self):
        kinds_seen = set()
        for name, values in SCENARIOS.items():
            with self.subTest(scenario=name):
                objects = render(values)
                self.assertTrue(objects)
                for obj in objects:
                    template = obj.pop("__template")
                    kinds_seen.add(obj["kind"])
                    if (obj["apiVersion"], obj["kind"]) in CRD_KINDS:
                        continue
                    try:
                        kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
                    except kubernetes_validate.ValidationError as e:
                        path = ".".join(str(p) for p in e.path)
                        self.fail(f"{template} ({obj['kind']}) is not valid Kubernetes {KUBE_VERSION}: {path}: {e.message}")
                    except kubernetes_validate.SchemaNotFoundError as e:
                        self.fail(f"{template}: no schema for {obj['apiVersion']} {obj['kind']}: {e.message}")
        expected = {"Deployment", "Service", "HTTPRoute", "Ingress", "ConfigMap", "PodDisruptionBudget", "ServiceMonitor"}
        self.assertEqual(kinds_seen, expected)

    def test_helm_lint_is_clean_with_every_scenario(self):
        for name, values in SCENARIOS.items():
            with self.subTest(scenario=name):
                report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}")
                self.assertEqual(report["errors"], [], report)
                # Severity 1 is information (the chart has no icon); 2 warning, 3 error.
                worse = [m for m in report["messages"] if m["severity"] >= 2]
                self.assertEqual(worse, [], report)

    def test_values_have_the_seeds_shape(self):
        with helm.Chart.load(CHART) as chart:
            values = chart.values
        c = values["connect"]
        self.assertIs(c["enabled"], True)
        self.assertEqual(set(c["image"]), {"repository", "tag", "pullPolicy"})
        self.assertEqual(c["replicaCount"], 1)
        self.assertEqual(c["service"], {"type": "ClusterIP", "port": 8000})
        self.assertEqual(c["envFrom"], [{"secretRef": {"name": SECRET}}])
        self.assertEqual(
            c["resources"],
            {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "500m", "memory": "512Mi"}},
        )
        self.assertIs(values["gateway"]["connect"]["enabled"], False)
        self.assertIs(values["ingress"]["connect"]["enabled"], False)


class Defaults(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.objects = render()
        cls.c = container(cls.objects)
        cls.pod = one(cls.objects, "Deployment")["spec"]["template"]["spec"]

    def test_only_a_deployment_and_a_clusterip_service(self):
        self.assertEqual(sorted(o["kind"] for o in self.objects), ["Deployment", "Service"])

    def test_service_is_what_the_backends_connect_service_url_names(self):
        svc = one(self.objects, "Service")
        self.assertEqual(svc["metadata"]["name"], "cobi-dashboard-connect")
        self.assertEqual(svc["spec"]["type"], "ClusterIP")
        self.assertEqual(svc["spec"]["ports"], [{"name": "http", "port": 8000, "targetPort": "http", "protocol": "TCP"}])
        self.assertEqual(self.c["ports"], [{"name": "http", "containerPort": 8000, "protocol": "TCP"}])
        labels = one(self.objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(svc["spec"]["selector"].items() <= labels.items())
        self.assertEqual(one(self.objects, "Deployment")["metadata"]["name"], "cobi-dashboard-connect")

    def test_environment_from_the_secret_and_host_forced_to_all_interfaces(self):
        self.assertEqual(self.c["envFrom"], [{"secretRef": {"name": SECRET}}])
        env = env_of(self.c)
        # An explicit env entry wins over envFrom: a Secret saying HOST=127.0.0.1 cannot break it.
        self.assertEqual(env["HOST"]["value"], "0.0.0.0")
        self.assertEqual(env["PORT"]["value"], "8000")
        self.assertNotIn("DATABASE_URL", env)
        self.assertNotIn("SERVICES_FILE", env)

    def test_resources(self):
        self.assertEqual(self.c["resources"]["requests"], {"cpu": "100m", "memory": "256Mi"})
        self.assertEqual(self.c["resources"]["limits"], {"cpu": "500m", "memory": "512Mi"})

    def test_image(self):
        with helm.Chart.load(CHART) as chart:
            app_version = chart.metadata["appVersion"]
        self.assertEqual(self.c["image"], f"docker.io/hellocobi/dashboard-connect:{app_version}")
        self.assertEqual(self.c["imagePullPolicy"], "IfNotPresent")

    def test_security_context(self):
        psc = self.pod["securityContext"]
        self.assertIs(psc["runAsNonRoot"], True)
        self.assertGreater(psc["runAsUser"], 0)
        self.assertEqual(psc["seccompProfile"], {"type": "RuntimeDefault"})
        sc = self.c["securityContext"]
        self.assertIs(sc["allowPrivilegeEscalation"], False)
        self.assertIs(sc["readOnlyRootFilesystem"], True)
        self.assertIs(sc["runAsNonRoot"], True)
        self.assertEqual(sc["capabilities"], {"drop": ["ALL"]})
        self.assertNotIn("add", sc["capabilities"])
        self.assertEqual(sc["seccompProfile"], {"type": "RuntimeDefault"})
        self.assertIs(self.pod["automountServiceAccountToken"], False)

    def test_writable_directories_are_empty_dirs(self):
        env = env_of(self.c)
        data = env["SLUICE_DATA_DIR"]["value"]
        for path in (data, f"{data}/runs", f"{data}/cache", env["STAGING_DIR"]["value"], "/tmp"):
            with self.subTest(path=path):
                mount, volume = mount_for(self.objects, path)
                self.assertIn("emptyDir", volume)
                self.assertFalse(mount.get("readOnly", False))
        # Staging, cache and data are separate volumes; staging is sized above the staging quota.
        _, staging = mount_for(self.objects, env["STAGING_DIR"]["value"])
        _, cache = mount_for(self.objects, f"{data}/cache")
        _, runs = mount_for(self.objects, f"{data}/runs")
        self.assertEqual(len({staging["name"], cache["name"], runs["name"]}), 3)
        quota_mib = int(env["SLUICE_STAGING_TOTAL_MIB"]["value"])
        size = staging["emptyDir"]["sizeLimit"]
        self.assertTrue(size.endswith("Mi"), size)
        self.assertGreater(int(size[:-2]), quota_mib)

    def test_plugins_come_from_the_image(self):
        env = env_of(self.c)
        self.assertEqual(env["PLUGINS_DIR"]["value"], "/plugins")
        self.assertFalse(any(m["name"] == "plugins" for m in self.c["volumeMounts"]))

    def test_probes(self):
        self.assertEqual(self.c["readinessProbe"]["httpGet"], {"path": "/ready", "port": "http"})
        self.assertEqual(self.c["livenessProbe"]["httpGet"], {"path": "/health", "port": "http"})
        startup = self.c["startupProbe"]
        self.assertEqual(startup["httpGet"], {"path": "/ready", "port": "http"})
        # First start compiles every plugin (one at a time, each up to SLUICE_COMPILE_TIMEOUT_SECS = 60 s):
        # the five built-in connectors take at most 5 rounds.
        self.assertGreaterEqual(startup["failureThreshold"] * startup["periodSeconds"], 5 * 60)

    def test_termination_grace_exceeds_the_services_own(self):
        env = env_of(self.c)
        grace = int(env["SLUICE_SHUTDOWN_GRACE_SECS"]["value"])
        self.assertEqual(grace, 20)
        pre_stop = self.c["lifecycle"]["preStop"]["sleep"]["seconds"]
        self.assertGreater(self.pod["terminationGracePeriodSeconds"], pre_stop + grace)

    def test_one_replica_no_disruption_budget(self):
        self.assertEqual(one(self.objects, "Deployment")["spec"]["replicas"], 1)
        self.assertEqual(by_kind(self.objects, "PodDisruptionBudget"), [])


class Options(unittest.TestCase):
    def test_gateway_httproute(self):
        objects = render(SCENARIOS["gateway"])
        route = one(objects, "HTTPRoute")
        self.assertEqual(route["apiVersion"], "gateway.networking.k8s.io/v1")
        self.assertEqual(route["metadata"]["name"], "cobi-dashboard-connect")
        self.assertEqual(route["spec"]["parentRefs"], [{"name": "cobi-gateway", "namespace": "gateway-system"}])
        self.assertEqual(route["spec"]["hostnames"], ["connect.example.com"])
        [rule] = route["spec"]["rules"]
        self.assertEqual(rule["matches"], [{"path": {"type": "PathPrefix", "value": "/"}}])
        self.assertEqual(rule["backendRefs"], [{"name": "cobi-dashboard-connect", "port": 8000}])
        self.assertEqual(set(route), {"apiVersion", "kind", "metadata", "spec", "__template"})
        self.assertEqual(by_kind(objects, "Ingress"), [])

    def test_gateway_without_parent_is_refused(self):
        with self.assertRaisesRegex(helm.HelmRenderError, "gateway.connect.parentRefs"):
            render({"gateway": {"connect": {"enabled": True}}})

    def test_ingress(self):
        objects = render(SCENARIOS["ingress"])
        ing = one(objects, "Ingress")
        self.assertEqual(ing["spec"]["ingressClassName"], "nginx")
        [rule] = ing["spec"]["rules"]
        self.assertEqual(rule["host"], "connect.example.com")
        [path] = rule["http"]["paths"]
        self.assertEqual(path["backend"]["service"], {"name": "cobi-dashboard-connect", "port": {"name": "http"}})
        self.assertEqual(ing["spec"]["tls"], [{"secretName": "connect-tls", "hosts": ["connect.example.com"]}])
        self.assertEqual(by_kind(objects, "HTTPRoute"), [])

    def test_plugins_volume_is_mounted_over_plugins_dir(self):
        for name, source in (("plugins-configmap", "configMap"), ("plugins-pvc", "persistentVolumeClaim"), ("plugins-image", "image")):
            with self.subTest(volume=source):
                objects = render(SCENARIOS[name])
                c = container(objects)
                plugins_dir = env_of(c)["PLUGINS_DIR"]["value"]
                mount, volume = mount_for(objects, plugins_dir)
                self.assertEqual(mount["mountPath"], plugins_dir)
                self.assertIs(mount["readOnly"], True)
                self.assertIn(source, volume)
                self.assertEqual(volume[source], SCENARIOS[name]["connect"]["plugins"]["volume"][source])

    def test_services_registry_configmap(self):
        objects = render(SCENARIOS["services-registry"])
        cm = one(objects, "ConfigMap")
        self.assertEqual(cm["metadata"]["name"], "cobi-dashboard-connect-services")
        self.assertEqual(yaml.safe_load(cm["data"]["services.yaml"]), SERVICES_REGISTRY)
        c = container(objects)
        services_file = env_of(c)["SERVICES_FILE"]["value"]
        mount, volume = mount_for(objects, services_file)
        # A directory mount (not subPath), so the kubelet's updates reach the file: hot reload.
        self.assertNotIn("subPath", mount)
        self.assertEqual(volume["configMap"]["name"], cm["metadata"]["name"])
        self.assertEqual(services_file, f"{mount['mountPath']}/services.yaml")

    def test_services_registry_as_yaml_text(self):
        text = yaml.safe_dump(SERVICES_REGISTRY)
        cm = one(render({"connect": {"services": {"registryYaml": text}}}), "ConfigMap")
        self.assertEqual(cm["data"]["services.yaml"].strip(), text.strip())
        with self.assertRaisesRegex(helm.HelmRenderError, "set one of connect.services.registry"):
            render({"connect": {"services": {"registryYaml": text, "existingConfigMap": "x"}}})

    def test_services_registry_from_an_existing_configmap(self):
        objects = render(SCENARIOS["services-existing"])
        self.assertEqual(by_kind(objects, "ConfigMap"), [])
        _, volume = mount_for(objects, env_of(container(objects))["SERVICES_FILE"]["value"])
        self.assertEqual(volume["configMap"]["name"], "my-services")

    def test_replicas_need_a_database(self):
        with self.assertRaises(helm.HelmRenderError) as caught:
            render({"connect": {"replicaCount": 2}})
        message = str(caught.exception)
        self.assertIn("connect.replicaCount is 2", message)
        self.assertIn("connect.database.existingSecret", message)

    def test_replicas_with_a_database_get_a_disruption_budget(self):
        objects = render(WITH_DB)
        self.assertEqual(one(objects, "Deployment")["spec"]["replicas"], 3)
        pdb = one(objects, "PodDisruptionBudget")
        self.assertEqual(pdb["spec"]["maxUnavailable"], 1)
        labels = one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]
        self.assertTrue(pdb["spec"]["selector"]["matchLabels"].items() <= labels.items())
        env = env_of(container(objects))
        self.assertEqual(env["DATABASE_URL"]["valueFrom"], {"secretKeyRef": {"name": "connect-db", "key": "DATABASE_URL"}})
        self.assertEqual(env["SLUICE_RUN_SECRETS_KEY"]["valueFrom"], {"secretKeyRef": {"name": "connect-db", "key": "SLUICE_RUN_SECRETS_KEY"}})
        self.assertEqual(env["SLUICE_REPLICA_ID"]["valueFrom"], {"fieldRef": {"fieldPath": "metadata.name"}})

    def test_servicemonitor(self):
        objects = render(SCENARIOS["servicemonitor"])
        sm = one(objects, "ServiceMonitor")
        svc = one(objects, "Service")
        self.assertEqual(sm["metadata"]["labels"]["release"], "prom")
        self.assertTrue(sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items())
        [endpoint] = sm["spec"]["endpoints"]
        self.assertEqual((endpoint["port"], endpoint["path"]), ("http", "/metrics"))
        self.assertEqual(by_kind(render(), "ServiceMonitor"), [])

    def test_longer_shutdown_grace_moves_the_pods(self):
        objects = render({"connect": {"shutdownGraceSecs": 120}})
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        self.assertEqual(env_of(container(objects))["SLUICE_SHUTDOWN_GRACE_SECS"]["value"], "120")
        self.assertGreater(pod["terminationGracePeriodSeconds"], 120)

    def test_disabled_renders_nothing(self):
        self.assertEqual(render({"connect": {"enabled": False}, "gateway": {"connect": {"enabled": True}}}), [])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RealService(unittest.TestCase):
    """The rendered container's environment (paths moved under a temporary root, HOST kept on
    loopback on this machine) starts the built `sluice serve`: the variable names are ones the
    service reads, the probe paths answer, the services ConfigMap's content loads, and SIGTERM ends
    it within the pod's termination grace."""

    BUILT_IN = ("github", "slack", "linear", "hubspot", "http-json")

    def setUp(self):
        cache = os.environ.get("SLUICE_CACHE", "/var/cache/sluice")
        target = os.environ.get("CARGO_TARGET_DIR", f"{cache}/target")
        self.binary = Path(os.environ.get("SLUICE_CHART_BIN", f"{target}/debug/sluice"))
        self.plugin_out = Path(os.environ.get("SLUICE_PLUGIN_OUT", f"{cache}/plugins"))
        missing = [str(p) for p in [self.binary] + [self.plugin_out / f"{n}.wasm" for n in self.BUILT_IN] if not p.exists()]
        if missing:
            # A failure, not a skip: a test that skips itself would pass on a machine that
            # never built the service.
            self.fail(f"not built: {', '.join(missing)} (scripts/dev.sh test builds them before this)")

    def test_rendered_environment_starts_the_service(self):
        objects = render(SCENARIOS["services-registry"])
        c = container(objects)
        pod = one(objects, "Deployment")["spec"]["template"]["spec"]
        root = Path(tempfile.mkdtemp(prefix="sluice-chart-"))
        self.addCleanup(shutil.rmtree, root, ignore_errors=True)
        # The pod's filesystem: every volume mount becomes a directory under root.
        for m in c["volumeMounts"]:
            (root / m["mountPath"].lstrip("/")).mkdir(parents=True, exist_ok=True)
        plugins = root / env_of(c)["PLUGINS_DIR"]["value"].lstrip("/")
        plugins.mkdir(parents=True, exist_ok=True)
        for n in self.BUILT_IN:
            shutil.copy(self.plugin_out / f"{n}.wasm", plugins)
        cm = one(objects, "ConfigMap")
        services_file = root / env_of(c)["SERVICES_FILE"]["value"].lstrip("/")
        services_file.write_text(cm["data"]["services.yaml"])

        port = free_port()
        token = "chart-test-token-0123456789"
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "CONNECT_SERVICE_TOKEN": token, "RUST_LOG": "info"}
        for e in c["env"]:
            if "value" not in e:
                continue
            value = e["value"]
            if value.startswith("/"):
                value = str(root / value.lstrip("/"))
            env[e["name"]] = value
        self.assertEqual(env["HOST"], "0.0.0.0")
        env["HOST"], env["PORT"] = "127.0.0.1", str(port)
        log = open(root / "service.log", "w+b")
        self.addCleanup(log.close)
        # The binary as the image holds it: its own copy, readable and executable by the pod's user
        # (the build's target directory may sit in a 0700 cache; the service re-executes itself to
        # compile plugins, which the pod's user must be allowed to do).
        binary = root / "usr/local/bin/sluice"
        binary.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(self.binary, binary)
        binary.chmod(0o755)
        command = [str(binary), *c["args"]]
        # As root here: run it as the pod does, as runAsUser/runAsGroup with no capabilities and no
        # privilege escalation (setpriv), the writable volumes owned by that user (as emptyDirs are).
        as_pod_user = os.geteuid() == 0 and shutil.which("setpriv")
        if as_pod_user:
            uid, gid = pod["securityContext"]["runAsUser"], pod["securityContext"]["runAsGroup"]
            root.chmod(0o755)
            for m in c["volumeMounts"]:
                if not m.get("readOnly"):
                    os.chown(root / m["mountPath"].lstrip("/"), uid, gid)
            command = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--no-new-privs",
                       "--inh-caps=-all", "--bounding-set=-all", *command]
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        self.addCleanup(lambda: proc.poll() is None and (proc.kill(), proc.wait()))

        def get(path: str, auth: bool = False) -> tuple[int, bytes]:
            req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
            if auth:
                req.add_header("x-connect-service-token", token)
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    return r.status, r.read()
            except urllib.error.HTTPError as e:
                return e.code, e.read()
            except OSError:
                return 0, b""

        def service_log() -> str:
            log.flush()
            return (root / "service.log").read_text(errors="replace")[-4000:]

        startup = c["startupProbe"]
        budget = startup["failureThreshold"] * startup["periodSeconds"]
        started = time.monotonic()
        status = 0
        while time.monotonic() - started < budget and proc.poll() is None:
            status, _ = get(startup["httpGet"]["path"])
            # 503 while plugins load, 0 before it listens; anything else is final (404: no such path).
            if status not in (0, 503):
                break
            time.sleep(0.2)
        self.assertEqual(status, 200, f"{startup['httpGet']['path']} never answered 200:\n{service_log()}")
        ready_after = time.monotonic() - started
        self.assertEqual(get(c["livenessProbe"]["httpGet"]["path"])[0], 200)
        self.assertEqual(get(c["readinessProbe"]["httpGet"]["path"])[0], 200)
        status, body = get("/internal/connectors", auth=True)
        self.assertEqual(status, 200, body)
        ids = {x["id"] for x in json.loads(body)["connectors"]}
        self.assertTrue(set(self.BUILT_IN) <= ids, f"{ids}\n{service_log()}")
        status, body = get("/internal/services", auth=True)
        self.assertEqual(status, 200, body)
        services = json.loads(body)
        self.assertIsNone(services["error"], services)
        self.assertEqual([s["id"] for s in services["services"]], ["purchase-orders"])
        # The run records and the compile cache went to the data volume, nothing elsewhere.
        data = Path(env["SLUICE_DATA_DIR"])
        self.assertTrue((data / "cache").is_dir())
        if as_pod_user:
            self.assertEqual((data / "runs").stat().st_uid, uid)

        proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            code = proc.wait(timeout=pod["terminationGracePeriodSeconds"])
        except subprocess.TimeoutExpired:
            self.fail(f"still running {pod['terminationGracePeriodSeconds']} s after SIGTERM:\n{service_log()}")
        print(
            f"\n  real service{' as uid %d, no capabilities' % uid if as_pod_user else ''}: ready after {ready_after:.1f} s (startup probe allows {budget} s), "
            f"exit {code} {time.monotonic() - t0:.1f} s after SIGTERM "
            f"(termination grace {pod['terminationGracePeriodSeconds']} s)",
            end=" ",
        )
        self.assertEqual(code, 0, service_log())


if __name__ == "__main__":
    helm.disable_logging()
    unittest.main(verbosity=2)
