//! scheme-sim as a real process on 127.0.0.1, and the KEK ceremony that
//! shares its keys with a test vault.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::daemon::TestEnv;
use crate::{bin_dir, first_line};

pub struct SchemeSim {
    child: Option<Child>,
    pub port: u16,
    pub kek_dir: std::path::PathBuf,
    agent: ureq::Agent,
}

impl SchemeSim {
    /// Starts scheme-sim on a free port with KEK components in `env`.
    pub fn start(env: &TestEnv) -> SchemeSim {
        Self::start_on(env, 0)
    }

    pub fn start_on(env: &TestEnv, port: u16) -> SchemeSim {
        let kek_dir = env.path().join("kek");
        std::fs::create_dir_all(&kek_dir).unwrap();
        let mut child = Command::new(bin_dir().join("scheme-sim"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--kek-dir")
            .arg(&kek_dir)
            .stdout(Stdio::piped())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(env.path().join("scheme-sim.log"))
                    .unwrap(),
            )
            .spawn()
            .expect("spawn scheme-sim");
        let line = first_line(&mut child);
        let port = line
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected scheme-sim banner {line:?}"));
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(30)))
            .http_status_as_error(false)
            .build()
            .into();
        SchemeSim {
            child: Some(child),
            port,
            kek_dir,
            agent,
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `[schemes.*]` config entries pointing at this simulator.
    pub fn schemes_config(&self) -> String {
        let mut s = String::new();
        for (name, trid) in [
            ("visa", "40010030273"),
            ("mastercard", "50110030273"),
            ("amex", "34010030273"),
            ("discover", "60110030273"),
        ] {
            s.push_str(&format!(
                "[schemes.{name}]\nurl = \"{}\"\ntoken_requestor_id = \"{trid}\"\n",
                self.url()
            ));
        }
        s
    }

    /// The key ceremony: imports every scheme's KEK into the env's HSM.
    pub fn import_keks(&self, env: &TestEnv) {
        for scheme in ["visa", "mastercard", "amex", "discover"] {
            let c1 = self.kek_dir.join(format!("{scheme}.c1"));
            let c2 = self.kek_dir.join(format!("{scheme}.c2"));
            env.vaultd_cmd(&[
                "keys",
                "import-kek",
                "--scheme",
                scheme,
                "--component",
                c1.to_str().unwrap(),
                "--component",
                c2.to_str().unwrap(),
            ]);
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let mut r = self
            .agent
            .get(&format!("{}{path}", self.url()))
            .call()
            .expect("GET scheme-sim");
        r.body_mut().read_json().expect("JSON")
    }

    pub fn post(&self, path: &str, body: &Value) -> Value {
        let mut r = self
            .agent
            .post(&format!("{}{path}", self.url()))
            .send_json(body)
            .expect("POST scheme-sim");
        r.body_mut().read_json().unwrap_or(Value::Null)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SchemeSim {
    fn drop(&mut self) {
        self.stop();
    }
}
