//! `deploy/` (docs/api.md "Operations"): the compose stack and the Kubernetes manifests, checked
//! with what runs without Docker or a cluster. The files parse; they agree with each other (ports,
//! names, labels, mounts); Prometheus' own `promtool` accepts the scrape config, the alerts and
//! every dashboard query; those queries name only series a real server exports; the Kubernetes
//! objects pass `kubernetes-validate` (the API's published schemas), and the probes, ports and
//! settings work against the real binary started with the manifests' settings.

use std::{
    collections::{BTreeSet, HashMap},
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use serde_json::{Value as Json, json};
use serde_yaml_ng::Value as Yaml;

use crate::helpers::{ADMIN_KEY, HTTP_KEY, TestDatabase, free_port, skip};

fn deploy_path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(relative)
}

fn read(relative: &str) -> String {
    let path = deploy_path(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn yaml(relative: &str) -> Yaml {
    let mut value: Yaml = serde_yaml_ng::from_str(&read(relative))
        .unwrap_or_else(|error| panic!("deploy/{relative}: {error}"));
    value.apply_merge().expect("YAML merge keys");
    value
}

fn text(value: &Yaml) -> &str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("not a string: {value:?}"))
}

/// The port of a `host:port` address.
fn port_of(address: &str) -> u16 {
    address
        .rsplit_once(':')
        .and_then(|(_, port)| port.parse().ok())
        .unwrap_or_else(|| panic!("no port in {address:?}"))
}

/// Whether `command` runs here; a test that needs it and cannot run says so (and fails under
/// CI=true, where .ci/run installs it).
fn tool_available(test: &str, command: &[&str], installed_by: &str) -> bool {
    let found = std::process::Command::new(command[0])
        .args(&command[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    if !found {
        skip(
            test,
            &format!("`{}` does not run ({installed_by})", command.join(" ")),
            true,
        );
    }
    found
}

const PROMTOOL: [&str; 2] = ["promtool", "--version"];
/// Run as a module: pip may put its script where PATH does not look.
const KUBERNETES_VALIDATE: [&str; 4] = ["python3", "-m", "kubernetes_validate", "--version"];

struct Compose {
    services: serde_yaml_ng::Mapping,
}

impl Compose {
    fn load() -> Self {
        let compose = yaml("compose.yml");
        let services = compose["services"].as_mapping().expect("services").clone();
        Compose { services }
    }

    /// The OCTP instances: the services built from this repository.
    fn servers(&self) -> Vec<(String, &Yaml)> {
        self.services
            .iter()
            .filter(|(_, service)| service["build"].as_str() == Some(".."))
            .map(|(name, service)| (text(name).to_owned(), service))
            .collect()
    }

    /// The service running `image_prefix` (e.g. `nginx:`), and its name.
    fn by_image(&self, image_prefix: &str) -> (String, &Yaml) {
        let mut found = self.services.iter().filter(|(_, service)| {
            service["image"]
                .as_str()
                .is_some_and(|image| image.starts_with(image_prefix))
        });
        let (name, service) = found
            .next()
            .unwrap_or_else(|| panic!("no service runs {image_prefix}"));
        (text(name).to_owned(), service)
    }

    /// Where `service` mounts the repository path `source` (relative to deploy/).
    fn mount_target(&self, service: &Yaml, source: &str) -> String {
        service["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .filter_map(|volume| volume.as_str()?.strip_prefix(source)?.strip_prefix(':'))
            .map(|rest| rest.trim_end_matches(":ro").to_owned())
            .next()
            .unwrap_or_else(|| panic!("{source} is not mounted: {service:?}"))
    }
}

#[test]
fn the_compose_stack_runs_two_instances_behind_nginx_with_prometheus_grafana_and_health_checks() {
    let compose = Compose::load();

    for (name, service) in &compose.services {
        assert!(
            service["healthcheck"]["test"].as_sequence().is_some(),
            "service {name:?} has no health check"
        );
        if let Some(image) = service["image"].as_str() {
            assert!(
                image.contains(':') && !image.ends_with(":latest"),
                "{name:?}: pin the image version ({image})"
            );
        }
        // Everything mounted from the repository exists.
        for volume in service["volumes"].as_sequence().into_iter().flatten() {
            if let Some(source) = text(volume).strip_prefix("./") {
                let source = source.split(':').next().unwrap();
                assert!(
                    deploy_path(source).exists(),
                    "{name:?} mounts deploy/{source}, which does not exist"
                );
            }
        }
    }

    let servers = compose.servers();
    assert!(servers.len() >= 2, "several instances: {servers:?}");
    let mut api_ports = BTreeSet::new();
    let mut metrics_ports = BTreeSet::new();
    for (name, server) in &servers {
        let environment = &server["environment"];
        assert!(
            text(&environment["OCTP_DATABASE_URL"]).starts_with("postgres://"),
            "{name}: instances share PostgreSQL"
        );
        for secret in ["OCTP_HTTP_KEY", "OCTP_ADMIN_KEY"] {
            let value = text(&environment[secret]);
            assert!(
                value.starts_with("${") && value.contains(":?"),
                "{name}: {secret} must come from the environment and be required: {value}"
            );
        }
        assert_eq!(
            server["healthcheck"]["test"],
            serde_yaml_ng::to_value(["CMD", "octp-backend", "healthcheck"]).unwrap()
        );
        assert_eq!(
            server["depends_on"]["postgres"]["condition"].as_str(),
            Some("service_healthy")
        );
        assert!(
            server["ports"].is_null(),
            "{name}: instances are reached through the load balancer only"
        );
        api_ports.insert(port_of(text(&environment["OCTP_BIND"])));
        metrics_ports.insert(port_of(text(&environment["OCTP_METRICS_BIND"])));
    }
    let [api_port] = api_ports.into_iter().collect::<Vec<_>>()[..] else {
        panic!("instances listen on different ports");
    };
    let [metrics_port] = metrics_ports.into_iter().collect::<Vec<_>>()[..] else {
        panic!("instances serve metrics on different ports");
    };
    assert_ne!(
        api_port, metrics_port,
        "metrics on a listener of their own, out of the load balancer's reach"
    );
    let server_names: BTreeSet<String> = servers.iter().map(|(name, _)| name.clone()).collect();

    // nginx balances over every instance, on the port each serves the API on, and passes
    // WebSocket upgrades through (subscriptions).
    let (balancer_name, balancer) = compose.by_image("nginx:");
    assert_eq!(
        compose.mount_target(balancer, "./nginx/nginx.conf"),
        "/etc/nginx/nginx.conf"
    );
    let nginx = read("nginx/nginx.conf");
    let upstream_block = nginx
        .split("upstream ")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .expect("nginx.conf has an upstream block");
    let upstreams: BTreeSet<String> = upstream_block
        .lines()
        .filter_map(|line| line.trim().strip_prefix("server "))
        .map(|rest| rest.split([' ', ';']).next().unwrap().to_owned())
        .collect();
    let expected: BTreeSet<String> = server_names
        .iter()
        .map(|name| format!("{name}:{api_port}"))
        .collect();
    assert_eq!(upstreams, expected, "nginx's upstream servers");
    assert!(nginx.contains("proxy_set_header Upgrade $http_upgrade;"));
    assert!(nginx.contains("proxy_http_version 1.1;"));
    let published = text(&balancer["ports"][0]);
    assert!(
        published.ends_with(&format!(":{api_port}")),
        "{balancer_name} publishes the API port: {published}"
    );
    assert!(nginx.contains(&format!("listen {api_port};")));
    for name in &server_names {
        assert_eq!(
            balancer["depends_on"][name.as_str()]["condition"].as_str(),
            Some("service_healthy"),
            "the load balancer waits for {name}"
        );
    }

    // Prometheus scrapes every instance on its metrics port.
    let (_, prometheus) = compose.by_image("prom/prometheus:");
    assert_eq!(
        compose.mount_target(prometheus, "./prometheus"),
        "/etc/prometheus"
    );
    let scrape = yaml("prometheus/prometheus.yml");
    let targets: BTreeSet<String> = scrape["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|job| job["static_configs"].as_sequence().unwrap())
        .flat_map(|config| config["targets"].as_sequence().unwrap())
        .map(|target| text(target).to_owned())
        .collect();
    let expected: BTreeSet<String> = server_names
        .iter()
        .map(|name| format!("{name}:{metrics_port}"))
        .collect();
    assert_eq!(targets, expected, "Prometheus' scrape targets");

    // Grafana: the provisioned datasource is the Prometheus service, the dashboard provider reads
    // the directory the dashboards are mounted on, and the dashboard uses that datasource.
    let (_, grafana) = compose.by_image("grafana/grafana:");
    assert_eq!(
        compose.mount_target(grafana, "./grafana/provisioning"),
        "/etc/grafana/provisioning"
    );
    let dashboards_dir = compose.mount_target(grafana, "./grafana/dashboards");
    let datasources = yaml("grafana/provisioning/datasources/prometheus.yml");
    let datasource = &datasources["datasources"][0];
    assert_eq!(text(&datasource["type"]), "prometheus");
    let (prometheus_name, _) = compose.by_image("prom/prometheus:");
    assert_eq!(
        text(&datasource["url"]),
        format!("http://{prometheus_name}:9090")
    );
    let providers = yaml("grafana/provisioning/dashboards/octp.yml");
    assert_eq!(
        text(&providers["providers"][0]["options"]["path"]),
        dashboards_dir
    );
    let dashboard = dashboard();
    for panel in panels(&dashboard) {
        assert_eq!(
            panel["datasource"]["uid"].as_str(),
            datasource["uid"].as_str(),
            "panel {:?} uses the provisioned datasource",
            panel["title"]
        );
    }
}

fn dashboard() -> Json {
    serde_json::from_str(&read("grafana/dashboards/octp.json")).expect("the dashboard is JSON")
}

fn panels(dashboard: &Json) -> &Vec<Json> {
    dashboard["panels"].as_array().expect("panels")
}

/// Every PromQL expression the dashboard draws, with Grafana's interval variable filled in.
fn dashboard_queries() -> Vec<(String, String)> {
    let dashboard = dashboard();
    let mut queries = Vec::new();
    for panel in panels(&dashboard) {
        let title = panel["title"].as_str().expect("a titled panel");
        let targets = panel["targets"].as_array().expect("panel targets");
        assert!(!targets.is_empty(), "panel {title:?} draws nothing");
        for target in targets {
            let expr = target["expr"].as_str().expect("a PromQL target");
            queries.push((title.to_owned(), expr.replace("$__rate_interval", "5m")));
        }
    }
    queries
}

fn alert_queries() -> Vec<(String, String)> {
    let alerts = yaml("prometheus/alerts.yml");
    alerts["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap())
        .map(|rule| {
            (
                text(&rule["alert"]).to_owned(),
                text(&rule["expr"]).to_owned(),
            )
        })
        .collect()
}

#[test]
fn the_dashboard_draws_what_operators_ask_for() {
    let queries = dashboard_queries();
    let drawn = |needle: &str| queries.iter().any(|(_, expr)| expr.contains(needle));
    for series in [
        "octp_http_requests_total",
        "octp_http_request_duration_seconds_bucket",
        "octp_events_total",
        "octp_config_cache_hits_total",
        "octp_config_cache_misses_total",
        "octp_db_pool_connections",
        "octp_subscriptions_active",
    ] {
        assert!(drawn(series), "the dashboard does not draw {series}");
    }
    assert!(drawn("histogram_quantile(0.5,") && drawn("histogram_quantile(0.99,"));
    assert!(
        drawn("sum by (transport, operation)"),
        "requests by operation"
    );
}

#[test]
fn promtool_accepts_the_prometheus_config_the_alerts_and_every_dashboard_query() {
    let test = "promtool_accepts_the_prometheus_config_the_alerts_and_every_dashboard_query";
    if !tool_available(
        test,
        &PROMTOOL,
        "Debian's prometheus package; .ci/run installs it",
    ) {
        return;
    }
    let config = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(deploy_path("prometheus/prometheus.yml"))
        .output()
        .unwrap();
    assert!(
        config.status.success(),
        "promtool check config: {}{}",
        String::from_utf8_lossy(&config.stdout),
        String::from_utf8_lossy(&config.stderr)
    );
    let report = String::from_utf8_lossy(&config.stdout);
    assert!(
        report.contains(&format!("{} rules found", alert_queries().len())),
        "the alerts were checked too: {report}"
    );

    // promtool has no command for a bare query; recording rules carry the dashboard's instead.
    let rules: Vec<Json> = dashboard_queries()
        .iter()
        .enumerate()
        .map(|(index, (_, expr))| json!({"record": format!("octp:dashboard_query_{index}"), "expr": expr}))
        .collect();
    let file = tempfile::NamedTempFile::with_suffix(".yml").unwrap();
    std::fs::write(
        file.path(),
        serde_json::to_string(&json!({"groups": [{"name": "dashboard", "rules": rules}]})).unwrap(),
    )
    .unwrap();
    let checked = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(file.path())
        .output()
        .unwrap();
    assert!(
        checked.status.success(),
        "a dashboard query is not valid PromQL: {}{}",
        String::from_utf8_lossy(&checked.stdout),
        String::from_utf8_lossy(&checked.stderr)
    );
}

/// The metric names a PromQL expression reads: what is left once strings, label matchers, ranges,
/// grouping clauses, functions, keywords and numbers are taken out.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut stripped = String::new();
    let mut chars = expr.chars().peekable();
    while let Some(char) = chars.next() {
        let closing = match char {
            '"' => '"',
            '{' => '}',
            '[' => ']',
            _ => {
                stripped.push(char);
                continue;
            }
        };
        // Skip to the closing character (escapes inside strings included).
        while let Some(inner) = chars.next() {
            if inner == '\\' {
                chars.next();
            } else if inner == closing {
                break;
            }
        }
        stripped.push(' ');
    }
    const KEYWORDS: [&str; 11] = [
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
    ];
    const AGGREGATIONS: [&str; 12] = [
        "sum",
        "min",
        "max",
        "avg",
        "group",
        "stddev",
        "stdvar",
        "count",
        "count_values",
        "bottomk",
        "topk",
        "quantile",
    ];
    let mut names = BTreeSet::new();
    let mut rest = stripped.as_str();
    while let Some(start) = rest.find(|char: char| char.is_ascii_alphabetic() || char == '_') {
        let preceded_by_digit = rest[..start]
            .chars()
            .last()
            .is_some_and(|char| char.is_ascii_digit() || char == '.');
        rest = &rest[start..];
        let end = rest
            .find(|char: char| !(char.is_ascii_alphanumeric() || char == '_' || char == ':'))
            .unwrap_or(rest.len());
        let word = &rest[..end];
        rest = &rest[end..];
        let calls = rest.trim_start().starts_with('(');
        if KEYWORDS.contains(&word) {
            // `by (a, b)`: the parenthesised labels are not metrics.
            let groups = !matches!(word, "and" | "or" | "unless" | "bool" | "offset");
            if groups && calls {
                let close = rest.find(')').expect("a closed grouping clause");
                rest = &rest[close + 1..];
            }
            continue;
        }
        // A function, an aggregation (`sum by (…) (…)` puts its clause before the parenthesis),
        // or a number's exponent.
        if calls || AGGREGATIONS.contains(&word) || preceded_by_digit {
            continue;
        }
        names.insert(word.to_owned());
    }
    names
}

#[test]
fn metric_names_are_read_out_of_promql() {
    let names = |expr| metric_names(expr).into_iter().collect::<Vec<_>>();
    assert_eq!(
        names(
            r#"histogram_quantile(0.99, sum by (le, operation) (rate(a_bucket{operation!~"x|y(z)"}[5m])))"#
        ),
        ["a_bucket"]
    );
    assert_eq!(
        names("max by (instance) (b{state=\"idle\"}) == 0 and on (instance) c > 1e3"),
        ["b", "c"]
    );
    assert_eq!(
        names("sum(rate(d[5m])) / (sum(rate(e[1h])) + 2)"),
        ["d", "e"]
    );
}

/// The series a freshly used server exports (histograms under their `_bucket`, `_sum` and
/// `_count` names), after one request of each kind so every labelled series exists; and the scrape.
async fn exported_series() -> (BTreeSet<String>, String) {
    let database = TestDatabase::create().await;
    let server = crate::metrics::Server::start(&database, &[]).await;
    for (key, query) in [
        (
            HTTP_KEY,
            "mutation { collectEvents(events: [{userId: \"u\", eventName: \"start\"}]) { accepted } }",
        ),
        (
            ADMIN_KEY,
            "mutation { upsertExperiment(input: {id: \"e\", name: \"E\", cohorts: {a: 1}}) { id } }",
        ),
        (HTTP_KEY, "query { remoteConfig(userId: \"u\") { config } }"),
    ] {
        let reply = server.graphql(key, query, json!({})).await;
        assert!(reply["errors"].is_null(), "{reply}");
    }
    let (scrape, text) =
        crate::metrics::scrape_with_text(&reqwest::Client::new(), &server.url("/metrics")).await;
    let mut series = BTreeSet::new();
    for sample in &scrape.samples {
        series.insert(sample.metric.clone());
        if matches!(
            sample.value,
            prometheus_parse::Value::Histogram(_) | prometheus_parse::Value::Summary(_)
        ) {
            for suffix in ["_bucket", "_sum", "_count"] {
                series.insert(format!("{}{suffix}", sample.metric));
            }
        }
    }
    (series, text)
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_read_only_series_the_server_exports() {
    let (exported, scrape) = exported_series().await;
    // `up` is Prometheus' own, one per scrape target.
    let from_prometheus = ["up"];
    let mut read = 0;
    for (place, expr) in dashboard_queries().into_iter().chain(alert_queries()) {
        let names = metric_names(&expr);
        assert!(!names.is_empty(), "{place:?} reads no series: {expr}");
        for name in names {
            read += 1;
            assert!(
                exported.contains(&name) || from_prometheus.contains(&name.as_str()),
                "{place:?} reads {name}, which the server does not export (it exports {exported:?})"
            );
        }
    }
    assert!(read >= 15, "only {read} series read");

    // Prometheus' own linter on what it will scrape (names, types, help, units).
    let test = "the_dashboard_and_the_alerts_read_only_series_the_server_exports";
    if tool_available(
        test,
        &PROMTOOL,
        "Debian's prometheus package; .ci/run installs it",
    ) {
        let mut lint = tokio::process::Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use tokio::io::AsyncWriteExt as _;
        let mut stdin = lint.stdin.take().unwrap();
        stdin.write_all(scrape.as_bytes()).await.unwrap();
        drop(stdin);
        let output = lint.wait_with_output().await.unwrap();
        assert!(
            output.status.success() && output.stdout.is_empty() && output.stderr.is_empty(),
            "promtool check metrics: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

struct Manifests {
    by_kind: HashMap<String, Yaml>,
    files: Vec<String>,
}

impl Manifests {
    fn load() -> Self {
        let kustomization = yaml("k8s/kustomization.yaml");
        let files: Vec<String> = kustomization["resources"]
            .as_sequence()
            .expect("kustomization resources")
            .iter()
            .map(|file| text(file).to_owned())
            .collect();
        let mut on_disk: Vec<String> = std::fs::read_dir(deploy_path("k8s"))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .filter(|name| name != "kustomization.yaml")
            .collect();
        on_disk.sort();
        let mut listed = files.clone();
        listed.sort();
        assert_eq!(listed, on_disk, "kustomization.yaml lists every manifest");
        let mut by_kind = HashMap::new();
        for file in &files {
            let object = yaml(&format!("k8s/{file}"));
            let kind = text(&object["kind"]).to_owned();
            assert!(
                by_kind.insert(kind.clone(), object).is_none(),
                "one {kind} only"
            );
        }
        Manifests { by_kind, files }
    }

    fn get(&self, kind: &str) -> &Yaml {
        self.by_kind
            .get(kind)
            .unwrap_or_else(|| panic!("no {kind} in deploy/k8s"))
    }
}

/// Whether every label of `selector` is among `labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let selector = selector.as_mapping().expect("a label selector");
    !selector.is_empty()
        && selector
            .iter()
            .all(|(key, value)| labels.get(key) == Some(value))
}

#[test]
fn the_kubernetes_objects_fit_together_and_pass_the_api_schemas() {
    let manifests = Manifests::load();
    let deployment = manifests.get("Deployment");
    let deployment_name = text(&deployment["metadata"]["name"]);
    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"].as_u64(), Some(3));
    let pod_labels = &spec["template"]["metadata"]["labels"];
    assert!(selects(&spec["selector"]["matchLabels"], pod_labels));
    assert!(selects(
        &manifests.get("Service")["spec"]["selector"],
        pod_labels
    ));
    assert!(selects(
        &manifests.get("PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        pod_labels
    ));
    let autoscaler = &manifests.get("HorizontalPodAutoscaler")["spec"];
    assert_eq!(text(&autoscaler["scaleTargetRef"]["kind"]), "Deployment");
    assert_eq!(text(&autoscaler["scaleTargetRef"]["name"]), deployment_name);
    assert!(
        autoscaler["minReplicas"].as_u64() >= spec["replicas"].as_u64(),
        "the autoscaler never goes below the Deployment's replicas"
    );

    let pod = &spec["template"]["spec"];
    let container = &pod["containers"][0];
    // Non-root, as the image's own user, on a read-only root filesystem.
    assert_eq!(pod["securityContext"]["runAsNonRoot"].as_bool(), Some(true));
    let dockerfile =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile")).unwrap();
    let image_user = dockerfile
        .lines()
        .find_map(|line| line.strip_prefix("USER "))
        .expect("the Dockerfile names its USER");
    assert_eq!(
        image_user,
        format!(
            "{}:{}",
            pod["securityContext"]["runAsUser"].as_u64().unwrap(),
            pod["securityContext"]["runAsGroup"].as_u64().unwrap()
        ),
        "the pod runs as the image's user"
    );
    let security = &container["securityContext"];
    assert_eq!(security["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(security["allowPrivilegeEscalation"].as_bool(), Some(false));
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                container["resources"][kind][resource].as_str().is_some(),
                "resources.{kind}.{resource}"
            );
        }
    }

    // Settings and keys come from the ConfigMap and the Secret the manifests define.
    let config_map = manifests.get("ConfigMap");
    let secret = manifests.get("Secret");
    let sources: Vec<(&str, &str)> = container["envFrom"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|source| {
            if let Some(name) = source["configMapRef"]["name"].as_str() {
                ("ConfigMap", name)
            } else {
                ("Secret", text(&source["secretRef"]["name"]))
            }
        })
        .collect();
    assert!(sources.contains(&("ConfigMap", text(&config_map["metadata"]["name"]))));
    assert!(sources.contains(&("Secret", text(&secret["metadata"]["name"]))));
    for key in ["OCTP_HTTP_KEY", "OCTP_ADMIN_KEY", "OCTP_DATABASE_URL"] {
        assert!(
            secret["stringData"].get(key).is_some(),
            "the Secret holds {key}"
        );
        assert!(
            config_map["data"].get(key).is_none(),
            "{key} is a secret, not a setting"
        );
    }

    // Probes and ports name the container's ports, which are the ones the settings bind.
    let port_number = |name: &str| {
        container["ports"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|port| port["name"].as_str() == Some(name))
            .and_then(|port| port["containerPort"].as_u64())
            .unwrap_or_else(|| panic!("no container port named {name}"))
    };
    let settings = &config_map["data"];
    assert_eq!(
        port_number("http"),
        u64::from(port_of(text(&settings["OCTP_BIND"])))
    );
    assert_eq!(
        port_number("metrics"),
        u64::from(port_of(text(&settings["OCTP_METRICS_BIND"])))
    );
    assert!(dockerfile.contains(&format!("EXPOSE {}", port_number("http"))));
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        assert_eq!(text(&container[probe]["httpGet"]["path"]), path, "{probe}");
        assert_eq!(
            text(&container[probe]["httpGet"]["port"]),
            "http",
            "{probe}"
        );
    }
    assert_eq!(
        text(&manifests.get("Service")["spec"]["ports"][0]["targetPort"]),
        "http"
    );
    let annotations = &spec["template"]["metadata"]["annotations"];
    assert_eq!(
        text(&annotations["prometheus.io/port"]).parse::<u64>().ok(),
        Some(port_number("metrics"))
    );

    let test = "the_kubernetes_objects_fit_together_and_pass_the_api_schemas";
    if tool_available(
        test,
        &KUBERNETES_VALIDATE,
        "pip install kubernetes-validate; .ci/run installs it",
    ) {
        let validated = std::process::Command::new("python3")
            .args(["-m", "kubernetes_validate", "--strict", "--quiet"])
            .args(
                manifests
                    .files
                    .iter()
                    .map(|file| deploy_path(&format!("k8s/{file}"))),
            )
            .output()
            .unwrap();
        assert!(
            validated.status.success(),
            "kubernetes-validate: {}{}",
            String::from_utf8_lossy(&validated.stdout),
            String::from_utf8_lossy(&validated.stderr)
        );
    }
}

/// The environment a pod gets: the ConfigMap's settings and the Secret's values, with addresses
/// moved to free local ports (the ports themselves are checked against the manifests above).
fn pod_environment(
    manifests: &Manifests,
    api_port: u16,
    metrics_port: u16,
    secrets: [(&str, &str); 3],
) -> Vec<(String, String)> {
    let mut environment: Vec<(String, String)> = manifests.get("ConfigMap")["data"]
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(key, value)| {
            let key = text(key).to_owned();
            let value = match key.as_str() {
                "OCTP_BIND" => format!("127.0.0.1:{api_port}"),
                "OCTP_METRICS_BIND" => format!("127.0.0.1:{metrics_port}"),
                _ => text(value).to_owned(),
            };
            (key, value)
        })
        .collect();
    let secret = &manifests.get("Secret")["stringData"];
    for (key, value) in secrets {
        assert!(secret.get(key).is_some(), "the Secret holds {key}");
        environment.push((key.to_owned(), value.to_owned()));
    }
    environment
}

fn server_with(environment: &[(String, String)]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_octp-backend"));
    command
        .arg("serve")
        .env_clear()
        .envs(environment.iter().map(|(key, value)| (key, value)))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

#[tokio::test]
async fn a_pod_with_the_manifests_settings_answers_its_probes_and_metrics_ports() {
    let manifests = Manifests::load();
    let container = &manifests.get("Deployment")["spec"]["template"]["spec"]["containers"][0];
    let database = TestDatabase::create().await;
    let (api_port, metrics_port) = (free_port(), free_port());
    let environment = pod_environment(
        &manifests,
        api_port,
        metrics_port,
        [
            ("OCTP_HTTP_KEY", HTTP_KEY),
            ("OCTP_ADMIN_KEY", ADMIN_KEY),
            ("OCTP_DATABASE_URL", database.url()),
        ],
    );
    let _server = server_with(&environment)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    let client = reqwest::Client::new();
    let get = |port: u16, path: String| {
        let client = client.clone();
        async move {
            client
                .get(format!("http://127.0.0.1:{port}{path}"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .map(|response| response.status().as_u16())
                .unwrap_or(0)
        }
    };
    let readiness = text(&container["readinessProbe"]["httpGet"]["path"]).to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while get(api_port, readiness.clone()).await != 200 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the readiness probe never passed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // polling for readiness, not a race
    }
    let liveness = text(&container["livenessProbe"]["httpGet"]["path"]).to_owned();
    assert_eq!(get(api_port, liveness).await, 200);
    let startup = text(&container["startupProbe"]["httpGet"]["path"]).to_owned();
    assert_eq!(get(api_port, startup).await, 200);
    let annotations = &manifests.get("Deployment")["spec"]["template"]["metadata"]["annotations"];
    let metrics_path = text(&annotations["prometheus.io/path"]).to_owned();
    assert_eq!(get(metrics_port, metrics_path.clone()).await, 200);
    assert_eq!(
        get(api_port, metrics_path).await,
        404,
        "metrics are not on the Service's port"
    );
}

#[tokio::test]
async fn a_pod_whose_secret_was_not_filled_in_refuses_to_start_and_says_why() {
    let database = TestDatabase::create().await;
    let manifests = Manifests::load();
    let secret = &manifests.get("Secret")["stringData"];
    let shipped = |key: &str| text(&secret[key]).to_owned();
    let (http_key, admin_key) = (shipped("OCTP_HTTP_KEY"), shipped("OCTP_ADMIN_KEY"));
    let environment = pod_environment(
        &manifests,
        free_port(),
        free_port(),
        [
            ("OCTP_HTTP_KEY", &http_key),
            ("OCTP_ADMIN_KEY", &admin_key),
            ("OCTP_DATABASE_URL", database.url()),
        ],
    );
    let output = tokio::time::timeout(Duration::from_secs(30), server_with(&environment).output())
        .await
        .expect("the server exits")
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OCTP_HTTP_KEY"),
        "names the missing key: {stderr}"
    );
}

/// nginx from `PATH`, or where Debian puts it (`/usr/sbin` is not on every user's `PATH`).
fn nginx_program() -> Option<PathBuf> {
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nginx"))
            .collect::<Vec<_>>()
    });
    on_path
        .chain([PathBuf::from("/usr/sbin/nginx")])
        .find(|candidate| candidate.is_file())
}

/// deploy/nginx/nginx.conf as shipped, but on this machine: the upstream servers are `servers`,
/// nginx listens on `port`, and its pid and temporary files go to `dir`.
fn local_nginx_conf(servers: &[u16], port: u16, dir: &Path) -> String {
    let shipped = read("nginx/nginx.conf");
    let compose = Compose::load();
    let api_port = port_of(text(&compose.servers()[0].1["environment"]["OCTP_BIND"]));
    let mut conf = String::new();
    let mut next_server = servers.iter();
    for line in shipped.lines() {
        let trimmed = line.trim_start();
        let line = if trimmed.starts_with("server server-") {
            let rest = trimmed.split_once(' ').unwrap().1;
            let options = rest.split_once(' ').map_or(";", |(_, options)| options);
            let port = next_server
                .next()
                .expect("as many local servers as upstreams");
            format!("        server 127.0.0.1:{port} {options}")
        } else if trimmed == format!("listen {api_port};") {
            format!("        listen 127.0.0.1:{port};")
        } else if trimmed.starts_with("pid ") {
            format!("pid {};", dir.join("nginx.pid").display())
        } else if trimmed == "http {" {
            let temp = |name: &str| dir.join(name).display().to_string();
            format!(
                "http {{\n    client_body_temp_path {};\n    proxy_temp_path {};\n    \
                 fastcgi_temp_path {};\n    uwsgi_temp_path {};\n    scgi_temp_path {};",
                temp("body"),
                temp("proxy"),
                temp("fastcgi"),
                temp("uwsgi"),
                temp("scgi")
            )
        } else {
            line.to_owned()
        };
        conf.push_str(&line);
        conf.push('\n');
    }
    assert!(
        next_server.next().is_none(),
        "every local server is an upstream"
    );
    conf
}

/// The shipped nginx config, run for real in front of two real servers: requests are spread over
/// both, subscriptions pass through (WebSocket upgrade), and an oversized body gets the server's
/// own error, not nginx's page.
#[tokio::test]
async fn the_shipped_nginx_config_balances_two_real_servers_and_passes_subscriptions() {
    let test = "the_shipped_nginx_config_balances_two_real_servers_and_passes_subscriptions";
    let Some(nginx) = nginx_program() else {
        skip(
            test,
            "nginx is not installed (Debian's nginx package; .ci/run installs it)",
            true,
        );
        return;
    };
    let database = TestDatabase::create().await;
    let ports = [free_port(), free_port()];
    let mut servers = Vec::new();
    for port in ports {
        servers.push(crate::helpers::start_binary(&database, port, &[], None).await);
    }
    let dir = tempfile::tempdir().unwrap();
    let proxy_port = free_port();
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, local_nginx_conf(&ports, proxy_port, dir.path())).unwrap();
    let mut proxy = tokio::process::Command::new(&nginx)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start nginx");

    let client = reqwest::Client::new();
    let through_proxy = format!("http://127.0.0.1:{proxy_port}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let up = client
            .get(format!("{through_proxy}/healthz"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .is_ok_and(|response| response.status() == 200);
        if up {
            break;
        }
        if let Ok(Some(status)) = proxy.try_wait() {
            let mut stderr = String::new();
            use tokio::io::AsyncReadExt as _;
            proxy
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .await
                .unwrap();
            panic!("nginx exited ({status}): {stderr}");
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nginx never answered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // polling for startup, not a race
    }

    const READS: usize = 20;
    for _ in 0..READS {
        let reply: Json = client
            .post(format!("{through_proxy}/graphql"))
            .bearer_auth(HTTP_KEY)
            .json(&json!({"query": "{ remoteConfig(userId: \"balanced\") { config } }"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(reply["errors"].is_null(), "{reply}");
    }
    let mut served = Vec::new();
    for port in ports {
        let (scrape, _) =
            crate::metrics::scrape_with_text(&client, &format!("http://127.0.0.1:{port}/metrics"))
                .await;
        let count: f64 = scrape
            .samples
            .iter()
            .filter(|sample| {
                sample.metric == "octp_http_requests_total"
                    && sample.labels.get("operation") == Some("remoteConfig")
            })
            .map(|sample| match sample.value {
                prometheus_parse::Value::Counter(value) => value,
                ref other => panic!("{other:?}"),
            })
            .sum();
        served.push(count);
    }
    assert_eq!(served.iter().sum::<f64>(), READS as f64, "{served:?}");
    assert!(
        served.iter().all(|&count| count >= 1.0),
        "both instances served: {served:?}"
    );

    // A subscription through the proxy: its first answer arrives over the upgraded socket.
    let address = format!("127.0.0.1:{proxy_port}").parse().unwrap();
    let mut socket = crate::ws_client::WsClient::connect_to(address, HTTP_KEY).await;
    socket
        .subscribe(
            "through-nginx",
            crate::subscriptions::CHANGED,
            json!({"u": "balanced"}),
        )
        .await;
    let first = socket
        .next_data("through-nginx", "remoteConfigChanged")
        .await;
    assert!(first["config"].is_object(), "{first}");

    // Over the server's 1 MiB limit and under nginx's: the server's own JSON error.
    let oversized = format!(
        "{{\"query\": \"{{ health {{ status }} }}\", \"padding\": \"{}\"}}",
        "x".repeat(1_500_000)
    );
    let response = client
        .post(format!("{through_proxy}/graphql"))
        .bearer_auth(HTTP_KEY)
        .header("content-type", "application/json")
        .body(oversized)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Json = response.json().await.expect("the server's JSON error");
    assert_eq!(body["errors"][0]["extensions"]["code"], "PAYLOAD_TOO_LARGE");
    drop(servers);
}
