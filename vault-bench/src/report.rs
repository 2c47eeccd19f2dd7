//! Results: one [`ScenarioReport`] per scenario, the baselines and their
//! ratios, printed as a human table or as JSON (`--json`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::baseline::{self, Baseline};
use crate::load::RunStats;
use crate::procfs::{CpuUse, Rss};
use crate::soak::SoakReport;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[derive(Debug, Clone, Serialize)]
pub struct ScenarioReport {
    pub name: String,
    pub secs: f64,
    pub ok: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub latency: Option<Latency>,
    /// Successful answers by kind (e.g. `created`, `existing`, `network_token`).
    pub outcomes: BTreeMap<String, u64>,
    pub errors_by_code: BTreeMap<String, u64>,
    pub daemon_cpu: Option<CpuUse>,
    pub bench_cpu: Option<CpuUse>,
    /// Busy cores of the whole machine (everything, not just these two).
    pub machine_cpu_cores: Option<f64>,
    pub daemon_rss: Option<Rss>,
    /// Scenario-specific figures (e.g. `tokens_per_sec`).
    pub extra: BTreeMap<String, f64>,
    pub notes: Vec<String>,
    /// Set when the scenario could not run; says why.
    pub skipped: Option<String>,
    /// Why the scenario failed its verdict (empty: passed or no verdict).
    pub failures: Vec<String>,
    /// The soak's verification and RSS verdict (mixed only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakReport>,
}

impl ScenarioReport {
    pub fn from_run(name: &str, run: &RunStats) -> ScenarioReport {
        let secs = run.elapsed.as_secs_f64();
        let mut notes = Vec::new();
        if !run.lost_connections.is_empty() {
            notes.push(format!(
                "{} load task(s) lost their connection; first: {}",
                run.lost_connections.len(),
                run.lost_connections[0]
            ));
        }
        ScenarioReport {
            name: name.to_owned(),
            secs,
            ok: run.ok,
            errors: run.failed,
            ops_per_sec: if secs > 0.0 {
                run.ok as f64 / secs
            } else {
                0.0
            },
            latency: (run.hist.count() > 0).then(|| Latency {
                p50_ms: ms(run.hist.quantile(0.50)),
                p99_ms: ms(run.hist.quantile(0.99)),
                p999_ms: ms(run.hist.quantile(0.999)),
                max_ms: ms(run.hist.max()),
                mean_ms: ms(run.hist.mean()),
            }),
            outcomes: run.outcomes.clone(),
            errors_by_code: run.errors.clone(),
            daemon_cpu: None,
            bench_cpu: None,
            machine_cpu_cores: None,
            daemon_rss: None,
            extra: BTreeMap::new(),
            notes,
            skipped: None,
            failures: Vec::new(),
            soak: None,
        }
    }

    pub fn skipped(name: &str, why: String) -> ScenarioReport {
        ScenarioReport {
            name: name.to_owned(),
            secs: 0.0,
            ok: 0,
            errors: 0,
            ops_per_sec: 0.0,
            latency: None,
            outcomes: BTreeMap::new(),
            errors_by_code: BTreeMap::new(),
            daemon_cpu: None,
            bench_cpu: None,
            machine_cpu_cores: None,
            daemon_rss: None,
            extra: BTreeMap::new(),
            notes: Vec::new(),
            skipped: Some(why),
            failures: Vec::new(),
            soak: None,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    pub nproc: usize,
    pub cpu_model: String,
    pub kernel: String,
}

impl Machine {
    pub fn this() -> Machine {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|t| {
                t.lines()
                    .find_map(|l| l.strip_prefix("model name"))
                    .map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            kernel,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub scenario: String,
    pub baseline: &'static str,
    /// Vault ops/s ÷ baseline ops/s.
    pub ratio: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub command: String,
    pub machine: Machine,
    pub connections: usize,
    pub depth: usize,
    pub duration_secs: f64,
    pub daemon_pid: Option<u32>,
    pub baselines: Vec<Baseline>,
    pub scenarios: Vec<ScenarioReport>,
    pub ratios: Vec<Ratio>,
    pub daemon_rss_end: Option<Rss>,
    /// False when any scenario failed its verdict (the process then exits
    /// non-zero).
    pub passed: bool,
}

/// Which baselines a scenario is read against.
fn relevant(scenario: &str) -> &'static [&'static str] {
    if scenario.starts_with("credentials") {
        &[
            baseline::HSM_DERIVE_CMAC,
            baseline::HSM_DERIVE_CMAC_2T,
            baseline::REDB_COMMIT_1PC,
        ]
    } else if scenario.starts_with("provisioning:") || scenario == "provisioning" {
        &[]
    } else {
        &[baseline::HSM_SEAL_FP, baseline::REDB_COMMIT_1PC]
    }
}

impl Report {
    /// Any scenario with a failed verdict.
    pub fn failed(&self) -> bool {
        self.scenarios.iter().any(|s| !s.failures.is_empty())
    }

    pub fn compute_ratios(&mut self) {
        self.ratios.clear();
        for s in &self.scenarios {
            if s.skipped.is_some() || s.ops_per_sec <= 0.0 {
                continue;
            }
            for name in relevant(&s.name) {
                let rate = self
                    .baselines
                    .iter()
                    .find(|b| b.name == *name)
                    .and_then(|b| b.per_sec);
                if let Some(rate) = rate.filter(|r| *r > 0.0) {
                    self.ratios.push(Ratio {
                        scenario: s.name.clone(),
                        baseline: name,
                        ratio: s.ops_per_sec / rate,
                    });
                }
            }
        }
    }

    pub fn human(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "vault-bench: {}", self.command);
        let _ = writeln!(
            o,
            "machine: {} CPU(s), {}, kernel {}; the bench client shares them with vaultd",
            self.machine.nproc, self.machine.cpu_model, self.machine.kernel
        );
        let _ = writeln!(
            o,
            "load: {} connections x pipeline depth {} = {} requests in flight; daemon pid {}",
            self.connections,
            self.depth,
            self.connections * self.depth,
            self.daemon_pid
                .map_or_else(|| "unknown".to_owned(), |p| p.to_string())
        );
        let _ = writeln!(o);
        let _ = writeln!(
            o,
            "{:<26} {:>11} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>5}",
            "scenario",
            "ok",
            "errors",
            "ops/s",
            "p50 ms",
            "p99 ms",
            "p999 ms",
            "max ms",
            "vaultd",
            "bench",
            "all"
        );
        for s in &self.scenarios {
            if let Some(why) = &s.skipped {
                let _ = writeln!(o, "{:<26} skipped: {why}", s.name);
                continue;
            }
            let lat = |f: fn(&Latency) -> f64, prec: usize| {
                s.latency
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |l| format!("{:.prec$}", f(l)))
            };
            let (p50, p99, p999, max) = (
                lat(|l| l.p50_ms, 2),
                lat(|l| l.p99_ms, 2),
                lat(|l| l.p999_ms, 2),
                lat(|l| l.max_ms, 1),
            );
            let _ = writeln!(
                o,
                "{:<26} {:>11} {:>8} {:>10} {:>8} {:>8} {:>8} {:>8} {:>7} {:>6} {:>5}",
                s.name,
                thousands(s.ok),
                thousands(s.errors),
                thousands(s.ops_per_sec.round() as u64),
                p50,
                p99,
                p999,
                max,
                s.daemon_cpu
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |c| format!("{:.2}", c.cores)),
                s.bench_cpu
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |c| format!("{:.2}", c.cores)),
                s.machine_cpu_cores
                    .map_or_else(|| "-".to_owned(), |c| format!("{c:.2}")),
            );
        }
        let _ = writeln!(
            o,
            "(vaultd / bench / all: CPU cores used during the scenario by vaultd, by this bench, by the whole machine)"
        );
        for s in self.scenarios.iter().filter(|s| s.skipped.is_none()) {
            let _ = writeln!(o);
            let _ = writeln!(o, "{} ({:.1} s)", s.name, s.secs);
            if !s.outcomes.is_empty() {
                let _ = writeln!(o, "  answers: {}", kv(&s.outcomes));
            }
            if !s.errors_by_code.is_empty() {
                let _ = writeln!(o, "  errors by code: {}", kv(&s.errors_by_code));
            }
            if let Some(c) = &s.daemon_cpu {
                let _ = writeln!(o, "  vaultd CPU: {}", c.describe(6));
            }
            if let Some(c) = &s.bench_cpu {
                let _ = writeln!(o, "  bench CPU:  {}", c.describe(3));
            }
            if let Some(r) = &s.daemon_rss {
                let _ = writeln!(o, "  vaultd memory after: {}", r.describe());
            }
            for (k, v) in &s.extra {
                let _ = writeln!(o, "  {k}: {v:.1}");
            }
            for n in &s.notes {
                let _ = writeln!(o, "  note: {n}");
            }
            if let Some(k) = &s.soak {
                soak_lines(&mut o, k);
            }
            for f in &s.failures {
                let _ = writeln!(o, "  FAILED: {f}");
            }
        }
        if !self.baselines.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "baselines (same run, daemon idle):");
            for b in &self.baselines {
                match (b.per_sec, &b.error) {
                    (Some(r), _) => {
                        let _ = writeln!(
                            o,
                            "  {:<22} {:>10} ops/s  ({:.1} us/op; {})",
                            b.name,
                            thousands(r.round() as u64),
                            1e6 / r,
                            b.what
                        );
                    }
                    (None, Some(e)) => {
                        let _ = writeln!(o, "  {:<22} not measured: {e}", b.name);
                    }
                    (None, None) => {}
                }
            }
        }
        if !self.ratios.is_empty() {
            let _ = writeln!(o);
            let _ = writeln!(o, "ratios (vault ops/s / baseline ops/s):");
            for r in &self.ratios {
                let _ = writeln!(
                    o,
                    "  {:<26} / {:<22} {:>8.2}x",
                    r.scenario, r.baseline, r.ratio
                );
            }
        }
        if let Some(r) = &self.daemon_rss_end {
            let _ = writeln!(o);
            let _ = writeln!(o, "vaultd memory at the end: {}", r.describe());
        }
        let judged = self
            .scenarios
            .iter()
            .any(|s| s.soak.is_some() || !s.failures.is_empty());
        if judged {
            let _ = writeln!(o);
            let _ = writeln!(
                o,
                "result: {}",
                if self.failed() { "FAILED" } else { "passed" }
            );
        }
        o
    }
}

fn soak_lines(o: &mut String, k: &SoakReport) {
    let _ = writeln!(
        o,
        "  soak: window {} aliases, {} live at the end",
        thousands(k.window as u64),
        thousands(k.live_at_end)
    );
    let _ = writeln!(
        o,
        "  verification ({:.1} s, not in the throughput): {}",
        k.verification_secs,
        k.verification.describe()
    );
    match &k.rss {
        Some(v) => {
            let _ = writeln!(o, "  rss: {}", v.describe());
        }
        None => {
            let _ = writeln!(o, "  rss: no verdict (no sample after the warm-up)");
        }
    }
    let series: Vec<String> = k
        .rss_samples
        .iter()
        .map(|(t, kb)| format!("{t:.0}s {:.1}", *kb as f64 / 1024.0))
        .collect();
    if !series.is_empty() {
        let _ = writeln!(o, "  rss samples (MB): {}", series.join(", "));
    }
}

fn kv(m: &BTreeMap<String, u64>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", thousands(*v)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let head = digits.len() % 3;
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    out.push_str(&digits[..head]);
    for group in digits.as_bytes()[head..].chunks(3) {
        if !out.is_empty() {
            out.push(',');
        }
        out.extend(group.iter().map(|&b| char::from(b)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_groups_digits() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }

    #[test]
    fn ratios_use_the_relevant_baselines_only() {
        let b = |name, per_sec| Baseline {
            name,
            what: "",
            ops: 1,
            secs: 1.0,
            per_sec: Some(per_sec),
            error: None,
        };
        let mut s = ScenarioReport::skipped("tokenize-new", String::new());
        s.skipped = None;
        s.ops_per_sec = 20_000.0;
        let mut c = s.clone();
        c.name = "credentials".to_owned();
        c.ops_per_sec = 5_000.0;
        let mut r = Report {
            command: String::new(),
            machine: Machine::this(),
            connections: 1,
            depth: 1,
            duration_secs: 1.0,
            daemon_pid: None,
            baselines: vec![
                b(baseline::HSM_SEAL_FP, 40_000.0),
                b(baseline::REDB_COMMIT_1PC, 2_000.0),
                b(baseline::HSM_DERIVE_CMAC, 10_000.0),
            ],
            scenarios: vec![s, c],
            ratios: Vec::new(),
            daemon_rss_end: None,
            passed: true,
        };
        r.compute_ratios();
        let got: Vec<(String, &str, f64)> = r
            .ratios
            .iter()
            .map(|x| (x.scenario.clone(), x.baseline, x.ratio))
            .collect();
        assert_eq!(
            got,
            vec![
                ("tokenize-new".to_owned(), baseline::HSM_SEAL_FP, 0.5),
                ("tokenize-new".to_owned(), baseline::REDB_COMMIT_1PC, 10.0),
                ("credentials".to_owned(), baseline::HSM_DERIVE_CMAC, 0.5),
                ("credentials".to_owned(), baseline::REDB_COMMIT_1PC, 2.5),
            ]
        );
    }
}
