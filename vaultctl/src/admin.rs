//! Admin ops on keys and the database: `key-rotate`, `key-retire`,
//! `kek-refresh`, `backup`.

use std::path::Path;

use vault_proto::BlockingClient;
use vault_proto::ops;

use crate::Failure;
use crate::output::print;

/// Rotates the PAN key, or the audit key when `audit`.
pub fn key_rotate(c: &mut BlockingClient, json: bool, audit: bool) -> Result<(), Failure> {
    let key = audit.then(|| "audit".to_owned());
    let r = c.op::<ops::KeyRotate>(&ops::KeyRotateArgs { key })?;
    print(json, &r, |r| {
        println!("{} key now at version {}", r.key, r.version)
    });
    Ok(())
}

pub fn key_retire(c: &mut BlockingClient, json: bool, version: u32) -> Result<(), Failure> {
    let r = c.op::<ops::KeyRetire>(&ops::KeyRetireArgs { version })?;
    print(json, &r, |r| {
        println!(
            "{} {}",
            r.label,
            if r.destroyed {
                "destroyed"
            } else {
                "not present"
            }
        )
    });
    Ok(())
}

pub fn kek_refresh(
    c: &mut BlockingClient,
    json: bool,
    scheme: String,
    version: u32,
) -> Result<(), Failure> {
    let r = c.op::<ops::KekRefresh>(&ops::KekRefreshArgs { scheme, version })?;
    print(json, &r, |r| {
        println!(
            "{}: {} key refreshes queued for tokens under KEK version {}",
            r.scheme, r.queued, r.version
        )
    });
    Ok(())
}

/// The daemon writes the copy, so it gets an absolute path.
pub fn backup(c: &mut BlockingClient, json: bool, to: &Path) -> Result<(), Failure> {
    let path =
        std::path::absolute(to).map_err(|e| Failure::Usage(format!("{}: {e}", to.display())))?;
    let r = c.op::<ops::BackupOp>(&ops::BackupArgs {
        path: path.to_string_lossy().into_owned(),
    })?;
    print(json, &r, |r| {
        println!(
            "backup {} (+ .pans): {} aliases, {} PANs, audit up to #{}",
            r.path, r.aliases, r.pans, r.audit_seq
        )
    });
    Ok(())
}
