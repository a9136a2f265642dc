//! Small helpers shared by the binding modules.

/// Lock a mutex, ignoring poisoning: the engine's one helper (its docs say
/// why), used for the bindings' mutexes too (the `Registry` maps, a
/// transport's rare state, a UDP endpoint's protocol and address cache: no
/// Python code runs under them; the lock order is the GIL first).
pub use netring_core::sync::lock;
