//! Every key of the console, declared once. A [`Binding`] names its keys,
//! the action each triggers, where it applies, and the words the hint bar
//! and the help screen show for it. Key handling ([`crate::keys`]), the hint
//! bar and the help popup all read [`BINDINGS`], so they cannot drift apart
//! (gitui's `Component::commands` / `CommandInfo`, with the key itself in
//! the same entry instead of in a separate key config).

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::state::{App, Tab};

/// What a key does. [`crate::keys`] carries each one out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Quit,
    OpenHelp,
    CloseHelp,
    ClearStatus,
    /// The screen of the digit pressed (`1` Overview … `6` Audit).
    GoToScreen,
    NextScreen,
    PrevScreen,
    /// Next row of the screen's list (queue page, schemes, tenants).
    SelectNext,
    SelectPrev,
    NextPage,
    PrevPage,
    FirstPage,
    CycleStateFilter,
    CycleSchemeFilter,
    RetryJob,
    PauseScheme,
    ResumeScheme,
    PurgeTenant,
    PurgeAll,
    /// Log tails (Events, Audit): towards the newest record.
    ScrollDown,
    ScrollUp,
    ScrollPageDown,
    ScrollPageUp,
    Oldest,
    Follow,
    Confirm,
    Cancel,
}

/// Where the user is, as far as keys go: a dialog takes every key, then
/// the help overlay, then the screen under them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Dialog,
    Help,
    Screen(Tab),
}

impl Context {
    pub fn of(app: &App) -> Context {
        if app.confirm.is_some() {
            Context::Dialog
        } else if app.show_help {
            Context::Help
        } else {
            Context::Screen(app.tab)
        }
    }

    /// Every context, screens in tab order.
    pub fn all() -> impl Iterator<Item = Context> {
        Tab::ALL
            .into_iter()
            .map(Context::Screen)
            .chain([Context::Help, Context::Dialog])
    }
}

/// The contexts a binding applies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Everywhere, dialogs included.
    Always,
    /// On every screen and in help, not in a dialog.
    NoDialog,
    /// On every screen, with no overlay open.
    Screens,
    /// On these screens, with no overlay open.
    On(&'static [Tab]),
    Help,
    Dialog,
}

impl Scope {
    pub fn applies(self, context: Context) -> bool {
        match (self, context) {
            (Scope::Always, _) => true,
            (Scope::NoDialog, context) => context != Context::Dialog,
            (Scope::Screens, Context::Screen(_)) => true,
            (Scope::On(tabs), Context::Screen(tab)) => tabs.contains(&tab),
            (Scope::Help, Context::Help) | (Scope::Dialog, Context::Dialog) => true,
            _ => false,
        }
    }

    /// Applies on every screen (the hint bar lists these last).
    fn is_general(self) -> bool {
        matches!(self, Scope::Always | Scope::NoDialog | Scope::Screens)
    }

    /// The help screen's section.
    fn section(self) -> String {
        match self {
            Scope::Always | Scope::NoDialog | Scope::Screens => "Any screen".into(),
            Scope::On(tabs) => tabs
                .iter()
                .map(|t| t.title())
                .collect::<Vec<_>>()
                .join(", "),
            Scope::Help => "Help".into(),
            Scope::Dialog => "Dialogs".into(),
        }
    }
}

/// Which key events a [`Key`] stands for. Modifiers are ignored except in
/// `Ctrl`, as they always were (a shifted letter arrives as its capital).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    Code(KeyCode),
    Ctrl(char),
    /// `1`…`6`: one key per screen.
    ScreenDigit,
}

impl Pattern {
    pub fn matches(self, key: &KeyEvent) -> bool {
        match self {
            Pattern::Code(code) => key.code == code,
            Pattern::Ctrl(c) => {
                key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char(c)
            }
            Pattern::ScreenDigit => screen_of(key).is_some(),
        }
    }

    pub fn label(self) -> String {
        match self {
            Pattern::Code(KeyCode::Char(c)) => c.to_string(),
            Pattern::Code(KeyCode::Up) => "↑".into(),
            Pattern::Code(KeyCode::Down) => "↓".into(),
            Pattern::Code(KeyCode::PageUp) => "PgUp".into(),
            Pattern::Code(KeyCode::PageDown) => "PgDn".into(),
            Pattern::Code(KeyCode::BackTab) => "S-Tab".into(),
            Pattern::Code(code) => code.to_string(),
            Pattern::Ctrl(c) => format!("Ctrl-{}", c.to_ascii_uppercase()),
            Pattern::ScreenDigit => format!("1-{}", Tab::ALL.len()),
        }
    }
}

/// The screen a digit key stands for.
pub fn screen_of(key: &KeyEvent) -> Option<Tab> {
    let KeyCode::Char(c) = key.code else {
        return None;
    };
    let i = c.to_digit(10)?.checked_sub(1)?;
    Tab::ALL.get(usize::try_from(i).ok()?).copied()
}

/// Where a key is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// In the hint bar and the help screen.
    Hint,
    /// In the help screen only.
    Help,
    /// Nowhere: a variant of a key that is shown (`Y` beside `y`).
    Hidden,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    pub pattern: Pattern,
    pub shown: Shown,
}

/// A key shown in the hint bar and in help.
const fn hint(code: KeyCode) -> Key {
    Key {
        pattern: Pattern::Code(code),
        shown: Shown::Hint,
    }
}

/// A key shown in help only.
const fn help(code: KeyCode) -> Key {
    Key {
        pattern: Pattern::Code(code),
        shown: Shown::Help,
    }
}

/// A key that works but is not named.
const fn hidden(code: KeyCode) -> Key {
    Key {
        pattern: Pattern::Code(code),
        shown: Shown::Hidden,
    }
}

const fn ch(c: char) -> KeyCode {
    KeyCode::Char(c)
}

/// One entry of the hint bar and one line of help: one action, or a pair
/// shown together (`j/k move`).
#[derive(Debug, PartialEq, Eq)]
pub struct Binding {
    pub actions: &'static [(Action, &'static [Key])],
    pub scope: Scope,
    /// The hint bar's word for it; `None`: help only.
    pub hint: Option<&'static str>,
    pub help: &'static str,
}

use Action as A;

/// The keymap, in the order of the help screen. Within one context no two
/// bindings share a key (a test checks).
pub static BINDINGS: &[Binding] = &[
    // Every screen.
    Binding {
        actions: &[
            (
                A::GoToScreen,
                &[Key {
                    pattern: Pattern::ScreenDigit,
                    shown: Shown::Hint,
                }],
            ),
            (A::NextScreen, &[hint(KeyCode::Tab)]),
            (A::PrevScreen, &[help(KeyCode::BackTab)]),
        ],
        scope: Scope::Screens,
        hint: Some("screens"),
        help: "switch screen",
    },
    Binding {
        actions: &[(A::OpenHelp, &[hint(ch('?'))])],
        scope: Scope::Screens,
        hint: Some("help"),
        help: "this help",
    },
    Binding {
        actions: &[(A::Quit, &[hint(ch('q'))])],
        scope: Scope::NoDialog,
        hint: Some("quit"),
        help: "quit",
    },
    Binding {
        actions: &[(
            A::Quit,
            &[Key {
                pattern: Pattern::Ctrl('c'),
                shown: Shown::Help,
            }],
        )],
        scope: Scope::Always,
        hint: None,
        help: "quit, also from a dialog",
    },
    Binding {
        actions: &[(A::ClearStatus, &[help(KeyCode::Esc)])],
        scope: Scope::Screens,
        hint: None,
        help: "clear the status line",
    },
    // Provisioning.
    Binding {
        actions: &[
            (A::SelectNext, &[hint(ch('j')), help(KeyCode::Down)]),
            (A::SelectPrev, &[hint(ch('k')), help(KeyCode::Up)]),
        ],
        scope: Scope::On(&[Tab::Provisioning]),
        hint: Some("move"),
        help: "next / previous job",
    },
    Binding {
        actions: &[
            (A::PrevPage, &[hint(ch('[')), help(KeyCode::PageUp)]),
            (
                A::NextPage,
                &[hint(ch(']')), help(KeyCode::PageDown), help(ch('n'))],
            ),
        ],
        scope: Scope::On(&[Tab::Provisioning]),
        hint: Some("page"),
        help: "previous / next page",
    },
    Binding {
        actions: &[(A::FirstPage, &[help(ch('g')), help(KeyCode::Home)])],
        scope: Scope::On(&[Tab::Provisioning]),
        hint: None,
        help: "first page",
    },
    Binding {
        actions: &[(A::CycleStateFilter, &[hint(ch('f'))])],
        scope: Scope::On(&[Tab::Provisioning]),
        hint: Some("state"),
        help: "filter by state (asks vaultd)",
    },
    Binding {
        actions: &[(A::CycleSchemeFilter, &[hint(ch('s'))])],
        scope: Scope::On(&[Tab::Provisioning]),
        hint: Some("scheme"),
        help: "filter by scheme (this page)",
    },
    Binding {
        actions: &[(A::RetryJob, &[hint(ch('r'))])],
        scope: Scope::On(&[Tab::Provisioning]),
        hint: Some("retry"),
        help: "retry the selected failed job",
    },
    // Schemes and Retention.
    Binding {
        actions: &[
            (A::SelectNext, &[hint(ch('j')), help(KeyCode::Down)]),
            (A::SelectPrev, &[hint(ch('k')), help(KeyCode::Up)]),
        ],
        scope: Scope::On(&[Tab::Schemes, Tab::Retention]),
        hint: Some("select"),
        help: "next / previous row",
    },
    Binding {
        actions: &[(A::PauseScheme, &[hint(ch('p'))])],
        scope: Scope::On(&[Tab::Schemes]),
        hint: Some("pause"),
        help: "pause the selected scheme",
    },
    Binding {
        actions: &[(A::ResumeScheme, &[hint(ch('u'))])],
        scope: Scope::On(&[Tab::Schemes]),
        hint: Some("resume"),
        help: "resume the selected scheme",
    },
    Binding {
        actions: &[(A::PurgeTenant, &[hint(ch('d'))])],
        scope: Scope::On(&[Tab::Retention]),
        hint: Some("purge tenant"),
        help: "purge due PANs of the tenant",
    },
    Binding {
        actions: &[(A::PurgeAll, &[hint(ch('D'))])],
        scope: Scope::On(&[Tab::Retention]),
        hint: Some("purge all"),
        help: "purge due PANs of all tenants",
    },
    // Log tails.
    Binding {
        actions: &[
            (A::ScrollDown, &[hint(ch('j')), help(KeyCode::Down)]),
            (A::ScrollUp, &[hint(ch('k')), help(KeyCode::Up)]),
        ],
        scope: Scope::On(&[Tab::Events, Tab::Audit]),
        hint: Some("scroll"),
        help: "scroll down / up",
    },
    Binding {
        actions: &[
            (A::ScrollPageDown, &[help(KeyCode::PageDown)]),
            (A::ScrollPageUp, &[help(KeyCode::PageUp)]),
        ],
        scope: Scope::On(&[Tab::Events, Tab::Audit]),
        hint: None,
        help: "scroll a page down / up",
    },
    Binding {
        actions: &[
            (A::Oldest, &[hint(ch('g')), help(KeyCode::Home)]),
            (A::Follow, &[hint(ch('G')), help(KeyCode::End)]),
        ],
        scope: Scope::On(&[Tab::Events, Tab::Audit]),
        hint: Some("oldest/follow"),
        help: "oldest / follow the tail",
    },
    // Overlays.
    Binding {
        actions: &[(A::CloseHelp, &[hint(ch('?')), hint(KeyCode::Esc)])],
        scope: Scope::Help,
        hint: Some("close help"),
        help: "close this help",
    },
    Binding {
        actions: &[(
            A::Confirm,
            &[hint(ch('y')), hidden(ch('Y')), help(KeyCode::Enter)],
        )],
        scope: Scope::Dialog,
        hint: Some("confirm"),
        help: "confirm",
    },
    Binding {
        actions: &[(
            A::Cancel,
            &[hint(ch('n')), hidden(ch('N')), hint(KeyCode::Esc)],
        )],
        scope: Scope::Dialog,
        hint: Some("cancel"),
        help: "cancel",
    },
];

/// The action a key triggers in `context`, if any.
pub fn action_for(context: Context, key: &KeyEvent) -> Option<Action> {
    BINDINGS
        .iter()
        .filter(|b| b.scope.applies(context))
        .flat_map(|b| b.actions)
        .find(|(_, keys)| keys.iter().any(|k| k.pattern.matches(key)))
        .map(|(action, _)| *action)
}

impl Binding {
    /// Its keys for the hint bar: `j/k`, `n/Esc`.
    pub fn hint_keys(&self) -> String {
        self.labels(|s| s == Shown::Hint, "/", "/")
    }

    /// Its keys for the help screen: `j, ↓ / k, ↑`.
    pub fn help_keys(&self) -> String {
        self.labels(|s| s != Shown::Hidden, ", ", " / ")
    }

    fn labels(&self, show: impl Fn(Shown) -> bool, within: &str, between: &str) -> String {
        self.actions
            .iter()
            .map(|(_, keys)| {
                keys.iter()
                    .filter(|k| show(k.shown))
                    .map(|k| k.pattern.label())
                    .collect::<Vec<_>>()
                    .join(within)
            })
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(between)
    }
}

/// One entry of the hint bar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub keys: String,
    pub text: &'static str,
    pub binding: &'static Binding,
}

/// The hint bar in `context`: what applies only here first, then the keys
/// of every screen.
pub fn hints(context: Context) -> Vec<Hint> {
    let mut bindings: Vec<&'static Binding> = BINDINGS
        .iter()
        .filter(|b| b.hint.is_some() && b.scope.applies(context))
        .collect();
    bindings.sort_by_key(|b| b.scope.is_general());
    bindings
        .into_iter()
        .filter_map(|b| {
            Some(Hint {
                keys: b.hint_keys(),
                text: b.hint?,
                binding: b,
            })
        })
        .collect()
}

/// One line of the help screen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HelpLine {
    /// Where it applies: "Any screen", screen names, "Help" or "Dialogs".
    pub section: String,
    pub keys: String,
    pub text: &'static str,
}

/// The help screen: every binding, in declaration order.
pub fn help_lines() -> Vec<HelpLine> {
    BINDINGS
        .iter()
        .map(|b| HelpLine {
            section: b.scope.section(),
            keys: b.help_keys(),
            text: b.help,
        })
        .collect()
}

/// The keys that close the help screen, for its title: `? or Esc`.
pub fn close_help_keys() -> String {
    BINDINGS
        .iter()
        .filter(|b| b.scope == Scope::Help)
        .flat_map(|b| b.actions)
        .filter(|(action, _)| *action == Action::CloseHelp)
        .flat_map(|(_, keys)| keys.iter())
        .filter(|k| k.shown != Shown::Hidden)
        .map(|k| k.pattern.label())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// The buttons of a confirmation dialog: each dialog action with its first
/// key (`y` confirm, `n` cancel).
pub fn dialog_buttons() -> Vec<(Action, String, &'static str)> {
    BINDINGS
        .iter()
        .filter(|b| b.scope == Scope::Dialog && b.hint.is_some())
        .filter_map(|b| {
            let (action, keys) = b.actions.first()?;
            Some((*action, keys.first()?.pattern.label(), b.hint?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// Every key a terminal can send that the console might care about:
    /// printable ASCII with and without Ctrl, and the special keys.
    fn probe_keys() -> Vec<KeyEvent> {
        let mut codes: Vec<KeyCode> = (' '..='~').map(KeyCode::Char).collect();
        codes.extend([
            KeyCode::Up,
            KeyCode::Down,
            KeyCode::Left,
            KeyCode::Right,
            KeyCode::PageUp,
            KeyCode::PageDown,
            KeyCode::Home,
            KeyCode::End,
            KeyCode::Tab,
            KeyCode::BackTab,
            KeyCode::Esc,
            KeyCode::Enter,
            KeyCode::Backspace,
            KeyCode::Delete,
            KeyCode::Insert,
        ]);
        codes.extend((1..=12).map(KeyCode::F));
        codes
            .into_iter()
            .flat_map(|code| {
                [
                    KeyEvent::new(code, KeyModifiers::NONE),
                    KeyEvent::new(code, KeyModifiers::CONTROL),
                ]
            })
            .collect()
    }

    /// Every action a handler carries out.
    const ACTIONS: [Action; 27] = [
        A::Quit,
        A::OpenHelp,
        A::CloseHelp,
        A::ClearStatus,
        A::GoToScreen,
        A::NextScreen,
        A::PrevScreen,
        A::SelectNext,
        A::SelectPrev,
        A::NextPage,
        A::PrevPage,
        A::FirstPage,
        A::CycleStateFilter,
        A::CycleSchemeFilter,
        A::RetryJob,
        A::PauseScheme,
        A::ResumeScheme,
        A::PurgeTenant,
        A::PurgeAll,
        A::ScrollDown,
        A::ScrollUp,
        A::ScrollPageDown,
        A::ScrollPageUp,
        A::Oldest,
        A::Follow,
        A::Confirm,
        A::Cancel,
    ];

    #[test]
    fn every_action_reachable_by_a_key_is_in_help() {
        let help = help_lines();
        let mut reached = BTreeSet::new();
        for context in Context::all() {
            for key in probe_keys() {
                let Some(action) = action_for(context, &key) else {
                    continue;
                };
                reached.insert(format!("{action:?}"));
                // The binding that handles it, and its line of help.
                let i = BINDINGS
                    .iter()
                    .position(|b| {
                        b.scope.applies(context)
                            && b.actions.iter().any(|(a, keys)| {
                                *a == action && keys.iter().any(|k| k.pattern.matches(&key))
                            })
                    })
                    .expect("every action comes from a binding");
                let line = &help[i];
                assert!(!line.text.is_empty(), "{action:?} has no help text");
                // Help names the key, or a key of the same action
                // (`y` for a hidden `Y`).
                let shown: Vec<String> = BINDINGS[i]
                    .actions
                    .iter()
                    .filter(|(a, _)| *a == action)
                    .flat_map(|(_, keys)| keys.iter())
                    .filter(|k| k.shown != Shown::Hidden)
                    .map(|k| k.pattern.label())
                    .collect();
                assert!(
                    !shown.is_empty() && shown.iter().all(|l| line.keys.contains(l)),
                    "{:?} in {context:?} triggers {action:?}; help says {line:?}",
                    key.code
                );
            }
        }
        let all: BTreeSet<String> = ACTIONS.iter().map(|a| format!("{a:?}")).collect();
        assert_eq!(reached, all, "actions no key reaches");
    }

    #[test]
    fn next_page_keys_are_all_in_help() {
        let line = &help_lines()[BINDINGS
            .iter()
            .position(|b| b.actions.iter().any(|(a, _)| *a == Action::NextPage))
            .expect("next page is bound")];
        assert_eq!(line.section, "Provisioning");
        assert_eq!(line.keys, "[, PgUp / ], PgDn, n");
    }

    #[test]
    fn no_key_is_bound_twice_in_one_context() {
        for context in Context::all() {
            for key in probe_keys() {
                let bound: Vec<(&str, Action)> = BINDINGS
                    .iter()
                    .filter(|b| b.scope.applies(context))
                    .flat_map(|b| b.actions.iter().map(move |(a, keys)| (b.help, *a, keys)))
                    .filter(|(_, _, keys)| keys.iter().any(|k| k.pattern.matches(&key)))
                    .map(|(help, a, _)| (help, a))
                    .collect();
                assert!(
                    bound.len() <= 1,
                    "{key:?} in {context:?} is bound to {bound:?}"
                );
            }
        }
    }

    #[test]
    fn the_hint_bar_lists_only_keys_valid_on_its_screen() {
        for context in Context::all() {
            for hint in hints(context) {
                assert!(hint.binding.scope.applies(context));
                for (action, keys) in hint.binding.actions {
                    for key in keys.iter().filter(|k| k.shown == Shown::Hint) {
                        // Each named key does what the entry says, here.
                        let event = match key.pattern {
                            Pattern::Code(code) => KeyEvent::from(code),
                            Pattern::Ctrl(c) => {
                                KeyEvent::new(KeyCode::Char(c), KeyModifiers::CONTROL)
                            }
                            Pattern::ScreenDigit => KeyEvent::from(KeyCode::Char('1')),
                        };
                        assert_eq!(
                            action_for(context, &event),
                            Some(*action),
                            "hint {:?} {} in {context:?}",
                            hint.keys,
                            hint.text
                        );
                        assert!(hint.keys.contains(&key.pattern.label()));
                    }
                }
            }
        }
    }

    #[test]
    fn screen_digits_are_one_to_six() {
        let at = |c| screen_of(&KeyEvent::from(KeyCode::Char(c)));
        assert_eq!(at('1'), Some(Tab::Overview));
        assert_eq!(at('6'), Some(Tab::Audit));
        assert_eq!(at('0'), None);
        assert_eq!(at('7'), None);
        assert_eq!(at('a'), None);
    }
}
