//! OS containers as the API carries them (JSON over D-Bus, structs over XML-RPC): what a client
//! asks for (`ContainerSpec`, validated here before hostd acts), what hostd reports
//! (`ContainerInfo`, `TemplateInfo`), and the resource limits and usage.

mod info;
mod resources;
mod spec;

pub use info::{ContainerInfo, ContainerState, TemplateInfo};
pub use resources::{Resources, Usage};
pub use spec::{
    CONTAINER_NAME_MAX, ContainerSpec, DEFAULT_INIT, InvalidContainer, MIN_DISK, is_ct_name,
};
