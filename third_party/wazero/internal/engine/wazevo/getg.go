package wazevo

// goroutineStackGuard0Offset is the offset of stackguard0 in the Go runtime's goroutine descriptor
// (runtime.g: stack.lo, stack.hi, stackguard0). The Go compiler's function prologues compare the stack
// pointer against the word at this offset on every architecture, so it is part of the toolchain's ABI.
const goroutineStackGuard0Offset = 16
