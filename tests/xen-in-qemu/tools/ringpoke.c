/*
 * ringpoke: dom0 tool of the Xen-in-QEMU harness (tests/xen-in-qemu/): maps a guest's
 * xenstore ring page with a foreign mapping (libxenforeignmemory, dlopen'ed, so no Xen
 * headers are needed to build it) and shows or damages it, to play a hostile guest whose
 * ring is corrupted (scenario hostile-ring). Built on the host by run.sh with `cc` when a
 * scenario declares `harness-needs: ringpoke`; runs in dom0 as /harness/bin/ringpoke.
 *
 *   ringpoke DOMID GFN show                  print the indices and status words
 *   ringpoke DOMID GFN set OFFSET VALUE      write a 32-bit word at OFFSET of the page
 *   ringpoke DOMID GFN header TYPE LEN       append a 16-byte message header (type TYPE,
 *                                            req_id 0x484f5354, tx_id 0, len LEN) to the
 *                                            request ring at req_prod and advance req_prod:
 *                                            the server reads it before the guest's next
 *                                            request (the guest kernel notifies it then)
 *
 * Ring layout (xen/include/public/io/xs_wire.h): req[1024] @0, rsp[1024] @1024,
 * req_cons @2048, req_prod @2052, rsp_cons @2056, rsp_prod @2060, server_features @2064,
 * connection @2068, error @2072, evtchn_port @2076 (newer Xen).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

typedef void *(*open_fn)(void *logger, unsigned int flags);
typedef void *(*map_fn)(void *fmem, uint32_t dom, int prot, size_t pages, const unsigned long *arr, int *err);

static volatile uint32_t *word(volatile unsigned char *page, unsigned long offset)
{
    return (volatile uint32_t *)(page + offset);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: ringpoke DOMID GFN show | set OFFSET VALUE | header TYPE LEN\n");
        return 2;
    }
    uint32_t dom = (uint32_t)strtoul(argv[1], NULL, 0);
    unsigned long gfn = strtoul(argv[2], NULL, 0);
    void *lib = dlopen("libxenforeignmemory.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "ringpoke: %s\n", dlerror());
        return 1;
    }
    open_fn fopen_ = (open_fn)dlsym(lib, "xenforeignmemory_open");
    map_fn fmap = (map_fn)dlsym(lib, "xenforeignmemory_map");
    if (!fopen_ || !fmap) {
        fprintf(stderr, "ringpoke: libxenforeignmemory lacks open/map\n");
        return 1;
    }
    void *fmem = fopen_(NULL, 0);
    if (!fmem) {
        perror("ringpoke: xenforeignmemory_open");
        return 1;
    }
    int err = 0;
    volatile unsigned char *page = fmap(fmem, dom, PROT_READ | PROT_WRITE, 1, &gfn, &err);
    if (!page || err) {
        fprintf(stderr, "ringpoke: cannot map gfn %#lx of domain %u (err %d)\n", gfn, dom, err);
        return 1;
    }
    if (strcmp(argv[3], "show") == 0) {
        printf("req_cons=%u req_prod=%u rsp_cons=%u rsp_prod=%u server_features=%#x connection=%u error=%u evtchn_port=%u\n",
               *word(page, 2048), *word(page, 2052), *word(page, 2056), *word(page, 2060),
               *word(page, 2064), *word(page, 2068), *word(page, 2072), *word(page, 2076));
    } else if (strcmp(argv[3], "set") == 0 && argc == 6) {
        unsigned long offset = strtoul(argv[4], NULL, 0);
        if (offset > 4092) {
            fprintf(stderr, "ringpoke: offset %lu outside the page\n", offset);
            return 2;
        }
        *word(page, offset & ~3UL) = (uint32_t)strtoul(argv[5], NULL, 0);
        __sync_synchronize();
    } else if (strcmp(argv[3], "header") == 0 && argc == 6) {
        uint32_t header[4] = {(uint32_t)strtoul(argv[4], NULL, 0), 0x484f5354, 0,
                              (uint32_t)strtoul(argv[5], NULL, 0)};
        uint32_t prod = *word(page, 2052);
        const unsigned char *bytes = (const unsigned char *)header;
        for (unsigned i = 0; i < sizeof(header); i++)
            page[(prod + i) & 1023] = bytes[i];
        __sync_synchronize();
        *word(page, 2052) = prod + (uint32_t)sizeof(header);
        __sync_synchronize();
    } else {
        fprintf(stderr, "ringpoke: unknown command\n");
        return 2;
    }
    return 0;
}
