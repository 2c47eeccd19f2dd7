//! Re-initialising the PKCS#11 module in place under load (SoftHSM2 frees
//! destroyed session objects only at `C_Finalize`): calls racing the
//! re-initialisation keep giving right answers, no handle or key copy of the
//! old module generation is used, and the memory SoftHSM2 keeps per
//! cryptogram stops growing. `reinit_standby.rs` does the same through the
//! standby copy.

mod common;

use std::sync::Arc;

use common::reinit::{
    cryptograms_under_load, destroyed_key_is_gone_everywhere, import_keys, memory_stays_flat,
};
use common::shared_hsm;
use vault_hsm::{Pkcs11Hsm, SOFTHSM_REINIT_AFTER_OBJECTS};

fn hsm() -> &'static Arc<Pkcs11Hsm> {
    &shared_hsm("vaultd-reinit").1
}

// One test per binary: the budget is per module and process-wide.
#[test]
fn reinitialisation_under_load_keeps_answers_right_and_memory_flat() {
    let hsm = hsm();
    assert_eq!(
        hsm.reinit_after_objects(),
        SOFTHSM_REINIT_AFTER_OBJECTS,
        "SoftHSM2 is re-initialised by default"
    );
    hsm.set_reinit_standby(false);
    let keys = import_keys(hsm, "tr-reinit");
    // A small budget: a re-initialisation every 40 session objects.
    hsm.set_reinit_after_objects(40);
    cryptograms_under_load(hsm, &keys, 400);
    let reinits = hsm.reinitializations();
    assert!(reinits >= 20, "only {reinits} re-initialisations");
    assert_eq!(hsm.standby_switches(), 0, "in place, as configured");

    destroyed_key_is_gone_everywhere(hsm, &keys[0].0);
    memory_stays_flat(hsm, &keys[1]);
}
