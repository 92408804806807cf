################################################################################
#
# cairn: the workspace one directory up, built with Buildroot's cargo infrastructure
#
################################################################################

CAIRN_VERSION = 0.1.0
CAIRN_SITE = $(BR2_EXTERNAL_CAIRN_PATH)/..
CAIRN_SITE_METHOD = local
CAIRN_LICENSE = Apache-2.0
CAIRN_DEPENDENCIES = dbus e2fsprogs
CAIRN_CARGO_BUILD_OPTS = --workspace --bins

CAIRN_BINARIES = init netd stord hostd apid cairnctl

# As image/src/appliance.rs lays them out: the kernel runs /init; the daemons in /usr/bin.
define CAIRN_INSTALL_TARGET_CMDS
	$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release/init $(TARGET_DIR)/init
	$(foreach b,netd stord hostd apid cairnctl,
		$(INSTALL) -D -m 0755 $(@D)/target/$(RUSTC_TARGET_NAME)/release/$(b) \
			$(TARGET_DIR)/usr/bin/$(b)
	)
	$(INSTALL) -D -m 0600 $(CAIRN_PKGDIR)/../../../examples/dev.toml \
		$(TARGET_DIR)/etc/cairn/host.toml
endef

$(eval $(cargo-package))
