//! Snapshot tests of every screen, fed recorded daemon answers, at 80×24
//! and 120×40, plus the disconnected state, the help overlay and a
//! confirmation dialog.

#[path = "common/fixtures.rs"]
mod fixtures;

use fixtures::{NOW, busy_app, lines, render};
use ratatui::crossterm::event::{KeyCode, KeyEvent};
use ratatui::style::Color;
use vault_tui::keys::handle_key;
use vault_tui::{App, Command, Tab, Update};

const SIZES: [(u16, u16); 2] = [(80, 24), (120, 40)];

fn press(app: &mut App, code: KeyCode) -> Vec<Command> {
    handle_key(app, KeyEvent::from(code))
}

fn snapshot_all_sizes(name: &str, app: &App) {
    for (w, h) in SIZES {
        let terminal = render(app, w, h);
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), terminal.backend());
    }
}

fn on_tab(tab: Tab) -> App {
    let mut app = busy_app();
    app.tab = tab;
    app
}

#[test]
fn overview() {
    snapshot_all_sizes("overview", &on_tab(Tab::Overview));
}

#[test]
fn provisioning() {
    let mut app = on_tab(Tab::Provisioning);
    for _ in 0..7 {
        press(&mut app, KeyCode::Char('j'));
    }
    snapshot_all_sizes("provisioning", &app);
}

#[test]
fn provisioning_filtered_by_scheme() {
    let mut app = on_tab(Tab::Provisioning);
    // all → amex → discover
    press(&mut app, KeyCode::Char('s'));
    press(&mut app, KeyCode::Char('s'));
    assert_eq!(app.queue.scheme_filter.as_deref(), Some("discover"));
    assert!(app.queue.visible().iter().all(|j| j.scheme == "discover"));
    snapshot_all_sizes("provisioning_discover", &app);
}

#[test]
fn schemes() {
    let mut app = on_tab(Tab::Schemes);
    press(&mut app, KeyCode::Down);
    snapshot_all_sizes("schemes", &app);
}

#[test]
fn retention() {
    snapshot_all_sizes("retention", &on_tab(Tab::Retention));
}

#[test]
fn events() {
    snapshot_all_sizes("events", &on_tab(Tab::Events));
}

#[test]
fn audit_chain_ok() {
    let app = on_tab(Tab::Audit);
    snapshot_all_sizes("audit_ok", &app);
    assert_eq!(banner_color(&app, "AUDIT CHAIN OK"), Color::Green);
}

#[test]
fn audit_chain_broken() {
    let mut app = on_tab(Tab::Audit);
    app.apply(Update::Audit(vault_proto::ops::Audit {
        records: Vec::new(),
        chain_ok: false,
    }));
    snapshot_all_sizes("audit_broken", &app);
    assert_eq!(banner_color(&app, "AUDIT CHAIN BROKEN"), Color::Red);
}

/// Background colour of the first cell of `text` on screen.
fn banner_color(app: &App, text: &str) -> Color {
    let terminal = render(app, 80, 24);
    let rows = lines(&terminal);
    let (y, x) = rows
        .iter()
        .enumerate()
        .find_map(|(y, row)| row.find(text).map(|byte| (y, row[..byte].chars().count())))
        .unwrap_or_else(|| panic!("{text} not on screen"));
    let cell = &terminal.backend().buffer()[(x as u16, y as u16)];
    cell.bg
}

#[test]
fn disconnected() {
    let mut app = busy_app();
    app.apply(Update::Disconnected {
        since_ms: NOW - 95_000,
        error: "cannot connect to /run/vaultd/vaultd.sock: Connection refused (os error 111)"
            .into(),
    });
    snapshot_all_sizes("disconnected_overview", &app);
    app.tab = Tab::Schemes;
    snapshot_all_sizes("disconnected_schemes", &app);
}

#[test]
fn never_connected() {
    let mut app = App::new(fixtures::SOCKET, NOW);
    app.apply(Update::Disconnected {
        since_ms: NOW - 3_000,
        error: "cannot connect to /run/vaultd/vaultd.sock: No such file or directory (os error 2)"
            .into(),
    });
    snapshot_all_sizes("never_connected", &app);
}

#[test]
fn help_overlay() {
    let mut app = busy_app();
    press(&mut app, KeyCode::Char('?'));
    assert!(app.show_help);
    snapshot_all_sizes("help", &app);
    press(&mut app, KeyCode::Esc);
    assert!(!app.show_help);
}

#[test]
fn confirm_pause_dialog() {
    let mut app = busy_app();
    press(&mut app, KeyCode::Char('3'));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('j'));
    press(&mut app, KeyCode::Char('j'));
    assert!(press(&mut app, KeyCode::Char('p')).is_empty());
    snapshot_all_sizes("confirm_pause_visa", &app);
    let commands = press(&mut app, KeyCode::Char('y'));
    assert_eq!(
        commands,
        [Command::PauseScheme {
            scheme: "visa".into()
        }]
    );
    app.apply(Update::ActionDone {
        ok: true,
        text: "visa is paused".into(),
    });
    snapshot_all_sizes("after_pause_visa", &app);
}

#[test]
fn confirm_purge_all_dialog() {
    let mut app = busy_app();
    press(&mut app, KeyCode::Char('4'));
    press(&mut app, KeyCode::Char('D'));
    let screen = lines(&render(&app, 80, 24)).join("\n");
    assert!(
        screen.contains("Erase the 48 PAN(s) due for purge across ALL"),
        "{screen}"
    );
    assert!(press(&mut app, KeyCode::Char('n')).is_empty());
    assert!(app.confirm.is_none());
}

#[test]
fn refused_action_is_shown_in_red() {
    let mut app = on_tab(Tab::Provisioning);
    app.apply(Update::ActionDone {
        ok: false,
        text: "queue_retry refused: forbidden: op not allowed".into(),
    });
    let terminal = render(&app, 80, 24);
    let rows = lines(&terminal);
    assert!(
        rows[22].contains("✗ queue_retry refused: forbidden"),
        "{}",
        rows[22]
    );
    assert_eq!(terminal.backend().buffer()[(4, 22)].fg, Color::Red);
}

#[test]
fn card_numbers_in_daemon_text_are_masked() {
    let mut app = on_tab(Tab::Events);
    let mut event = fixtures::events().remove(0);
    event.seq = 9_999;
    event.detail = "bogus detail 4111111111111111".into();
    app.apply(Update::Events(vec![event]));
    // `render` fails the test if a 12+ digit run reaches the screen.
    let screen = lines(&render(&app, 120, 40)).join("\n");
    assert!(screen.contains("bogus detail xxxxxxxxxxxx1111"), "{screen}");
}

/// The hint bar (the bottom row) of every screen, of the help overlay and
/// of a dialog, drawn from the keymap.
#[test]
fn hint_bar_on_each_screen() {
    let mut bars = Vec::new();
    let bottom_row = |app: &App| {
        let rows = lines(&render(app, 120, 40));
        rows.last()
            .cloned()
            .unwrap_or_default()
            .trim_end()
            .to_owned()
    };
    for tab in Tab::ALL {
        bars.push(format!("{:<13}│{}", tab.title(), bottom_row(&on_tab(tab))));
    }
    let mut app = busy_app();
    press(&mut app, KeyCode::Char('?'));
    bars.push(format!("{:<13}│{}", "Help", bottom_row(&app)));
    let mut app = on_tab(Tab::Retention);
    press(&mut app, KeyCode::Char('D'));
    assert!(app.confirm.is_some());
    bars.push(format!("{:<13}│{}", "Dialog", bottom_row(&app)));
    insta::assert_snapshot!("hint_bars", bars.join("\n"));
}

/// Every line of help is on screen at the smallest size, whole.
#[test]
fn help_shows_every_key_at_80x24() {
    let mut app = busy_app();
    press(&mut app, KeyCode::Char('?'));
    let screen = lines(&render(&app, 80, 24)).join("\n");
    for line in vault_tui::keymap::help_lines() {
        assert!(screen.contains(&line.keys), "{line:?} not on\n{screen}");
        assert!(screen.contains(line.text), "{line:?} not on\n{screen}");
    }
}

/// `n` pages forward on Provisioning, as help says (it was missing there).
#[test]
fn n_is_next_page() {
    let mut app = on_tab(Tab::Provisioning);
    let commands = press(&mut app, KeyCode::Char('n'));
    assert_eq!(app.queue.page_number(), 2);
    assert_eq!(commands.len(), 1);
    let help = vault_tui::keymap::help_lines();
    assert!(
        help.iter()
            .any(|l| l.section == "Provisioning" && l.keys.ends_with(", n")),
        "{help:?}"
    );
}

/// The README's table of keys is the keymap's (regenerate it from the
/// failure message after changing a key).
#[test]
fn readme_keys_table_matches_the_keymap() {
    let mut table = String::from("| where | keys | does |\n|---|---|---|\n");
    for line in vault_tui::keymap::help_lines() {
        table.push_str(&format!(
            "| {} | `{}` | {} |\n",
            line.section, line.keys, line.text
        ));
    }
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("vault-tui/README.md");
    assert!(
        readme.contains(&table),
        "vault-tui/README.md should list the keys as:\n\n{table}"
    );
}
