//! Test harness: starts the real `scheme-sim` binary on a free port with its
//! own KEK directory, and talks to it over HTTP.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use aes_kw::KwAes256;
use aes_kw::cipher::KeyInit;
use scheme_sim::Scheme;
use scheme_sim::date::YearMonth;
use serde_json::{Value, json};

pub struct SimProcess {
    pub child: Child,
    pub base: String,
    pub dir: tempfile::TempDir,
    agent: ureq::Agent,
}

/// A status, the JSON body, and the Retry-After header if any.
pub struct Answer {
    pub status: u16,
    pub body: Value,
    pub retry_after: Option<String>,
}

impl SimProcess {
    pub fn start() -> SimProcess {
        let dir = tempfile::tempdir().expect("tempdir");
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).expect("log file");
        let mut child = Command::new(env!("CARGO_BIN_EXE_scheme-sim"))
            .args(["--listen", "127.0.0.1:0", "--kek-dir"])
            .arg(dir.path().join("keks"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .expect("spawn scheme-sim");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read the listening line");
        let addr = line
            .strip_prefix("listening on ")
            .and_then(|a| a.strip_suffix('\n'))
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .to_owned();
        assert!(
            addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
            "{addr}"
        );
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        SimProcess {
            child,
            base: format!("http://{addr}"),
            dir,
            agent,
        }
    }

    pub fn kek_dir(&self) -> PathBuf {
        self.dir.path().join("keks")
    }

    pub fn stderr_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).expect("read log")
    }

    pub fn post(&self, path: &str, body: &Value) -> Answer {
        self.post_with(path, body, None)
    }

    pub fn post_with(&self, path: &str, body: &Value, idempotency_key: Option<&str>) -> Answer {
        let mut req = self.agent.post(format!("{}{path}", self.base));
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        match req.send_json(body) {
            Ok(r) => answer(r),
            Err(e) => panic!(
                "HTTP exchange with {path}: {e:?}; scheme-sim log:\n{}",
                self.stderr_log()
            ),
        }
    }

    pub fn get(&self, path: &str) -> Answer {
        answer(
            self.agent
                .get(format!("{}{path}", self.base))
                .call()
                .expect("HTTP exchange"),
        )
    }

    pub fn provision(&self, scheme: &str, key: &str, pan: &str) -> Answer {
        let (year, month) = card_expiry();
        self.post_with(
            &format!("/tsp/{scheme}/v1/provision"),
            &json!({"pan": pan, "exp_month": month, "exp_year": year, "token_requestor_id": "40010030273"}),
            Some(key),
        )
    }

    pub fn provision_ok(&self, scheme: &str, key: &str, pan: &str) -> Value {
        let a = self.provision(scheme, key, pan);
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    pub fn token(&self, token_ref: &str) -> Value {
        let a = self.get(&format!("/sim/tokens/{token_ref}"));
        assert_eq!(a.status, 200, "{}", a.body);
        a.body
    }

    pub fn stats(&self) -> Value {
        self.get("/sim/stats").body
    }

    pub fn set_faults(&self, faults: &Value) {
        let a = self.post("/sim/faults", faults);
        assert_eq!((a.status, &a.body), (200, &json!({})));
    }

    /// The scheme's KEK as the vault would build it from the two files.
    pub fn kek(&self, scheme: Scheme) -> [u8; 32] {
        let read = |n: u8| {
            let path = scheme_sim::kek::component_path(&self.kek_dir(), scheme, n);
            let text = std::fs::read_to_string(&path).expect("component");
            assert_eq!(text.len(), 65, "64 hex characters and a newline");
            assert!(text.ends_with('\n'));
            hex::decode(text.trim_end()).expect("hex")
        };
        let (c1, c2) = (read(1), read(2));
        let mut kek = [0u8; 32];
        for i in 0..32 {
            kek[i] = c1[i] ^ c2[i];
        }
        kek
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        // Only the child this harness started.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn answer(mut resp: ureq::http::Response<ureq::Body>) -> Answer {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().expect("ascii").to_owned());
    let text = resp.body_mut().read_to_string().expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"))
    };
    Answer {
        status,
        body,
        retry_after,
    }
}

/// RFC 3394 unwrap of a hex `wrapped_key` under `kek`.
pub fn unwrap_key(kek: &[u8; 32], wrapped_hex: &str) -> [u8; 16] {
    let wrapped = hex::decode(wrapped_hex).expect("hex");
    assert_eq!(wrapped.len(), 24);
    let kw = KwAes256::new(&(*kek).into());
    let mut out = [0u8; 16];
    kw.unwrap_key(&wrapped, &mut out)
        .expect("unwraps under the KEK");
    out
}

/// A card expiry two years ahead.
pub fn card_expiry() -> (u16, u8) {
    (YearMonth::now().year + 2, 6)
}

pub fn luhn_ok(digits: &str) -> bool {
    digits.bytes().all(|b| b.is_ascii_digit()) && vault_proto::pan::luhn_valid(digits.as_bytes())
}
