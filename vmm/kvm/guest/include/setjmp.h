/* Only wasm exceptions use setjmp; a plugin using them fails to link, naming setjmp. */
#pragma once
typedef long jmp_buf[8];
int setjmp(jmp_buf env);
__attribute__((noreturn)) void longjmp(jmp_buf env, int value);
