//! Disk and HSM faults (in-process).
