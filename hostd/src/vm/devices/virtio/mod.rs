//! virtio devices over the virtio-mmio transport (virtio 1.x, "version 2" registers).
