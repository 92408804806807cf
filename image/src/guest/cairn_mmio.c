// SPDX-License-Identifier: GPL-2.0
/*
 * cairn_mmio: registers virtio-mmio platform devices from module parameters, for kernels built
 * without CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES (Debian's). Same syntax as virtio_mmio.device=:
 *   insmod cairn_mmio.ko device=<size>@<baseaddr>:<irq>[:<id>] [device=...]
 * The virtio_mmio driver then binds them by name ("virtio-mmio").
 */
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/platform_device.h>
#include <linux/ioport.h>
#include <linux/kernel.h>

#define MAX_DEVS 32

static struct platform_device *devs[MAX_DEVS];
static int ndevs;

static int cairn_mmio_set(const char *val, const struct kernel_param *kp)
{
	struct resource res[2] = {};
	unsigned long long base, size;
	unsigned int irq, id = 0;
	char *end;
	int consumed = 0, processed;
	struct platform_device *pdev;

	if (ndevs >= MAX_DEVS)
		return -ENOSPC;
	size = memparse(val, &end);
	if (*end != '@')
		return -EINVAL;
	processed = sscanf(end, "@%lli:%u%n:%u%n", &base, &irq, &consumed, &id, &consumed);
	if (processed < 2 || val[consumed + (end - val)] || irq == 0 || size == 0)
		return -EINVAL;
	res[0].flags = IORESOURCE_MEM;
	res[0].start = base;
	res[0].end = base + size - 1;
	res[1].flags = IORESOURCE_IRQ;
	res[1].start = res[1].end = irq;
	pdev = platform_device_register_resndata(NULL, "virtio-mmio",
			processed == 3 ? (int)id : ndevs, res, ARRAY_SIZE(res), NULL, 0);
	if (IS_ERR(pdev))
		return PTR_ERR(pdev);
	pr_info("cairn_mmio: virtio-mmio device %d at 0x%llx+0x%llx irq %u\n",
		ndevs, base, size, irq);
	devs[ndevs++] = pdev;
	return 0;
}

static const struct kernel_param_ops cairn_mmio_ops = {
	.set = cairn_mmio_set,
};
module_param_cb(device, &cairn_mmio_ops, NULL, 0400);
MODULE_PARM_DESC(device, "<size>@<baseaddr>:<irq>[:<id>], repeatable");

static int __init cairn_mmio_init(void)
{
	return 0;
}

static void __exit cairn_mmio_exit(void)
{
	while (ndevs > 0)
		platform_device_unregister(devs[--ndevs]);
}

module_init(cairn_mmio_init);
module_exit(cairn_mmio_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("virtio-mmio devices from module parameters (Cairn guest kit)");
