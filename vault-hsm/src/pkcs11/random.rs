//! Random bytes from the HSM's RNG, fetched in blocks: one
//! `C_GenerateRandom` of [`BLOCK`] bytes serves many IVs and unpredictable
//! numbers instead of one call each. The block is per thread and per HSM
//! instance, and each byte is handed out once and wiped as it goes.

use std::cell::RefCell;

use cryptoki::session::Session;
use zeroize::Zeroize;

use super::errors::CallResult;

const BLOCK: usize = 512;
/// Larger requests go to the HSM directly.
const MAX_POOLED: usize = 32;

struct Pool {
    instance: u64,
    bytes: [u8; BLOCK],
    /// Bytes before `next` are used (and zero).
    next: usize,
}

thread_local! {
    static POOLS: RefCell<Vec<Pool>> = const { RefCell::new(Vec::new()) };
}

/// Fills `out` from this thread's block of HSM random bytes, refilling it
/// through `session` when it runs out.
pub(crate) fn fill(instance: u64, session: &Session, out: &mut [u8]) -> CallResult<()> {
    if out.len() > MAX_POOLED {
        session.generate_random_slice(out)?;
        return Ok(());
    }
    POOLS.with(|cell| {
        let mut pools = cell.borrow_mut();
        let idx = match pools.iter().position(|p| p.instance == instance) {
            Some(i) => i,
            None => {
                pools.push(Pool {
                    instance,
                    bytes: [0; BLOCK],
                    next: BLOCK,
                });
                pools.len() - 1
            }
        };
        let pool = &mut pools[idx];
        if BLOCK - pool.next < out.len() {
            session.generate_random_slice(&mut pool.bytes)?;
            pool.next = 0;
        }
        let taken = &mut pool.bytes[pool.next..pool.next + out.len()];
        out.copy_from_slice(taken);
        taken.zeroize();
        pool.next += out.len();
        Ok(())
    })
}

/// Wipes and drops this thread's block for `instance`.
pub(crate) fn forget_thread(instance: u64) {
    let _ = POOLS.try_with(|cell| {
        if let Ok(mut pools) = cell.try_borrow_mut() {
            for p in pools.iter_mut().filter(|p| p.instance == instance) {
                p.bytes.zeroize();
            }
            pools.retain(|p| p.instance != instance);
        }
    });
}
