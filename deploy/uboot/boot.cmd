# A/B boot for edge-agent with U-Boot's bootcount (docs/firmware.md "U-Boot"); compile with
#   mkimage -A arm -T script -C none -d boot.cmd boot.scr
# The board's default environment must hold boot_part=A bootlimit=1 upgrade_available=0 bootcount=0,
# CONFIG_BOOTCOUNT_LIMIT and CONFIG_BOOTCOUNT_ENV enabled: with upgrade_available=1 U-Boot counts
# each boot in bootcount and, past bootlimit, runs altbootcmd instead of bootcmd.
setenv altbootcmd 'if test "${boot_part}" = A; then setenv boot_part B; else setenv boot_part A; fi; setenv upgrade_available 0; setenv bootcount 0; saveenv; run bootcmd'
if test "${boot_part}" = B; then setenv rootpart 3; else setenv rootpart 2; fi
setenv bootargs "${bootargs} root=/dev/mmcblk0p${rootpart} rootwait ro rauc.slot=${boot_part}"
load mmc 0:${rootpart} ${kernel_addr_r} /boot/Image
load mmc 0:${rootpart} ${fdt_addr_r} /boot/board.dtb
booti ${kernel_addr_r} - ${fdt_addr_r}
