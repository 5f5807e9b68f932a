//! Operating a database from outside the application: stub while the module is written.
pub fn holder_pid(_path: &std::path::Path) -> Option<u32> {
    None
}
pub fn listen(_engine: &crate::Engine, _path: &std::path::Path, _rt: &tokio::runtime::Handle) {}
