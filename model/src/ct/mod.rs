//! OS containers as the API carries them (JSON over D-Bus, structs over XML-RPC): what a client
//! asks for (`ContainerSpec`, validated here before hostd acts), what hostd reports
//! (`ContainerInfo`, `TemplateInfo`), and the resource limits and usage.

mod bundled;
mod info;
mod resources;
mod spec;

pub use bundled::{
    BUNDLED_SCHEME, BUNDLED_TEMPLATES_DIR, bundled_files, bundled_name, is_bundled_name,
};
pub use info::{ContainerInfo, ContainerState, TemplateInfo};

/// The directory of a dir or nfs pool where hostd keeps the templates imported into it
/// (`templates/NAME/`); stord refuses to delete a pool while it holds any.
pub const POOL_TEMPLATES_DIR: &str = "templates";
pub use resources::{Resources, Usage};
pub use spec::{
    CONTAINER_NAME_MAX, ContainerSpec, DEFAULT_INIT, InvalidContainer, MIN_DISK, is_ct_name,
};
