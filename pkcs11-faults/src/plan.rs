//! The fault plan (one line of the control file) and the decision, per
//! intercepted call, whether to forward it or fail it. Pure logic: no I/O,
//! no PKCS#11 calls.

use cryptoki_sys::{
    CK_RV, CKR_DEVICE_ERROR, CKR_PIN_LOCKED, CKR_SESSION_HANDLE_INVALID, CKR_USER_NOT_LOGGED_IN,
};

/// What a failing call looks like to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// CKR_DEVICE_ERROR; the real module is not called.
    Device,
    /// CKR_SESSION_HANDLE_INVALID; the shim closes that session for real.
    Session,
    /// The shim logs the application out for real; C_Login answers
    /// CKR_PIN_LOCKED, calls on user objects CKR_USER_NOT_LOGGED_IN.
    PinLocked,
}

/// One control-file line: `fault=<kind> after=<n> count=<n|max>`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// `None`: every call forwards.
    pub fault: Option<Fault>,
    /// The 0-based index of the first counted call that may fail.
    pub after: u64,
    /// How many failures to inject; `None` is `max` (until healed).
    pub count: Option<u64>,
}

impl Plan {
    pub const OFF: Plan = Plan {
        fault: None,
        after: 0,
        count: None,
    };
}

/// Parses a control file's text. Empty or `off` is [`Plan::OFF`]; anything
/// unparseable is an error (the caller treats it as off: a PKCS#11 module
/// cannot complain on stderr).
pub fn parse(text: &str) -> Result<Plan, &'static str> {
    let line = text.lines().next().unwrap_or("").trim();
    if line.is_empty() || line == "off" {
        return Ok(Plan::OFF);
    }
    let mut plan = Plan {
        fault: None,
        after: 0,
        count: None,
    };
    for word in line.split_whitespace() {
        let (key, value) = word.split_once('=').ok_or("expected key=value")?;
        match key {
            "fault" => {
                plan.fault = Some(match value {
                    "device" => Fault::Device,
                    "session" => Fault::Session,
                    "pin_locked" => Fault::PinLocked,
                    _ => return Err("unknown fault"),
                })
            }
            "after" => plan.after = value.parse().map_err(|_| "after is not a number")?,
            "count" if value == "max" => plan.count = None,
            "count" => plan.count = Some(value.parse().map_err(|_| "count is not a number")?),
            _ => return Err("unknown key"),
        }
    }
    if plan.fault.is_none() {
        return Err("no fault=");
    }
    Ok(plan)
}

/// The intercepted entry points, grouped by how a fault applies to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// C_OpenSession: no session handle yet.
    OpenSession,
    /// C_Login.
    Login,
    /// C_GetSessionInfo: a locked token still answers it.
    SessionInfo,
    /// C_GenerateRandom: needs a session, no login.
    Random,
    /// Every call on (private) objects: crypto, search, attributes, keys.
    Object,
}

/// What the shim does with one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Forward,
    /// Return this value without calling the real module.
    Fail(CK_RV),
    /// Close the caller's session in the real module, then fail.
    CloseSessionThenFail(CK_RV),
    /// Log the application out in the real module, then fail.
    LogoutThenFail(CK_RV),
}

/// A plan being executed: counts the calls seen and the failures injected
/// since it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Armed {
    pub plan: Plan,
    calls: u64,
    injected: u64,
}

impl Armed {
    pub fn new(plan: Plan) -> Armed {
        Armed {
            plan,
            calls: 0,
            injected: 0,
        }
    }

    /// Decides one counted call. A call the fault cannot apply to (a
    /// session fault on C_OpenSession, say) forwards without using up the
    /// count.
    pub fn decide(&mut self, call: Call) -> Action {
        let index = self.calls;
        self.calls = self.calls.saturating_add(1);
        let Some(fault) = self.plan.fault else {
            return Action::Forward;
        };
        let used_up = self.plan.count.is_some_and(|c| self.injected >= c);
        if index < self.plan.after || used_up {
            return Action::Forward;
        }
        let action = match (fault, call) {
            (Fault::Device, _) => Action::Fail(CKR_DEVICE_ERROR),
            (Fault::Session, Call::OpenSession) => return Action::Forward,
            (Fault::Session, _) => Action::CloseSessionThenFail(CKR_SESSION_HANDLE_INVALID),
            (Fault::PinLocked, Call::OpenSession | Call::SessionInfo | Call::Random) => {
                return Action::Forward;
            }
            (Fault::PinLocked, Call::Login) => Action::LogoutThenFail(CKR_PIN_LOCKED),
            (Fault::PinLocked, Call::Object) => Action::LogoutThenFail(CKR_USER_NOT_LOGGED_IN),
        };
        self.injected += 1;
        action
    }

    /// Failures injected under this plan.
    pub fn injected(&self) -> u64 {
        self.injected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_lines() {
        assert_eq!(parse("").unwrap(), Plan::OFF);
        assert_eq!(parse("off\n").unwrap(), Plan::OFF);
        assert_eq!(
            parse("fault=device after=5 count=max\n").unwrap(),
            Plan {
                fault: Some(Fault::Device),
                after: 5,
                count: None
            }
        );
        assert_eq!(
            parse("fault=session after=0 count=3").unwrap(),
            Plan {
                fault: Some(Fault::Session),
                after: 0,
                count: Some(3)
            }
        );
        assert_eq!(
            parse("fault=pin_locked").unwrap().fault,
            Some(Fault::PinLocked)
        );
        for bad in ["fault=melt", "after=3", "fault=device after=x", "nonsense"] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn after_is_zero_based_and_count_limits_failures() {
        let mut a = Armed::new(parse("fault=device after=2 count=2").unwrap());
        let got: Vec<Action> = (0..6).map(|_| a.decide(Call::Object)).collect();
        let f = Action::Fail(CKR_DEVICE_ERROR);
        assert_eq!(
            got,
            [
                Action::Forward,
                Action::Forward,
                f,
                f,
                Action::Forward,
                Action::Forward
            ]
        );
        assert_eq!(a.injected(), 2);
    }

    #[test]
    fn max_fails_until_healed() {
        let mut a = Armed::new(parse("fault=device after=0 count=max").unwrap());
        assert!((0..1000).all(|_| a.decide(Call::OpenSession) == Action::Fail(CKR_DEVICE_ERROR)));
        let mut off = Armed::new(Plan::OFF);
        assert_eq!(off.decide(Call::Object), Action::Forward);
    }

    #[test]
    fn session_faults_skip_open_session_without_using_the_count() {
        let mut a = Armed::new(parse("fault=session after=0 count=1").unwrap());
        assert_eq!(a.decide(Call::OpenSession), Action::Forward);
        assert_eq!(
            a.decide(Call::Login),
            Action::CloseSessionThenFail(CKR_SESSION_HANDLE_INVALID)
        );
        assert_eq!(a.decide(Call::Object), Action::Forward);
    }

    #[test]
    fn pin_locked_refuses_login_and_object_calls_only() {
        let mut a = Armed::new(parse("fault=pin_locked after=0 count=max").unwrap());
        assert_eq!(a.decide(Call::OpenSession), Action::Forward);
        assert_eq!(a.decide(Call::SessionInfo), Action::Forward);
        assert_eq!(a.decide(Call::Random), Action::Forward);
        assert_eq!(
            a.decide(Call::Login),
            Action::LogoutThenFail(CKR_PIN_LOCKED)
        );
        assert_eq!(
            a.decide(Call::Object),
            Action::LogoutThenFail(CKR_USER_NOT_LOGGED_IN)
        );
        assert_eq!(a.injected(), 2);
    }
}
