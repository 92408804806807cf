/*
 * cairn-test-guest: a freestanding x86_64 guest entered like Linux's 64-bit boot protocol
 * entry (long mode, identity-mapped paging, %rsi = boot_params / zero page). It prints
 * "cairn-test-guest: cmdline=<boot_params.hdr.cmd_line_ptr>" on the 16550 at 0x3f8 and then
 * writes 0 to the debug-exit port 0xf4. Ring-0 work is kept tiny: under this machine's PVM
 * KVM every ring-0 instruction is emulated.
 */
    .code64
    .section .text.entry, "ax"
    .globl _start
_start:
    lea     banner(%rip), %rdi
    call    puts
    mov     0x228(%rsi), %edi          /* boot_params.hdr.cmd_line_ptr (zero-extended) */
    test    %edi, %edi
    jz      1f
    call    puts
1:  mov     $'\n', %al
    call    putc
    mov     $0xf4, %dx                  /* debug exit: the VMM ends the run here */
    xor     %eax, %eax
    out     %al, %dx
2:  hlt
    jmp     2b

/* puts: %rdi = NUL-terminated string */
puts:
    movb    (%rdi), %al
    test    %al, %al
    jz      1f
    call    putc
    inc     %rdi
    jmp     puts
1:  ret

/* putc: %al = byte; waits for LSR.THRE like a real 16550 driver */
putc:
    mov     %eax, %ecx
    mov     $0x3fd, %dx
1:  in      %dx, %al
    test    $0x20, %al
    jz      1b
    mov     %ecx, %eax
    mov     $0x3f8, %dx
    out     %al, %dx
    ret

    .section .rodata
banner:
    .asciz  "cairn-test-guest: cmdline="
