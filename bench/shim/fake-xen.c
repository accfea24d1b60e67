/*
 * fake-xen.c: an LD_PRELOAD "fake Xen" for Debian's C xenstored and oxenstored (Xen 4.17), so
 * that they run on plain Linux and serve the same simulated guests as our daemon
 * (daemon/README.md, "The simulated-guest convention").
 *
 * Written for this project from the library interfaces (xenctrl.h, xenevtchn.h, xengnttab.h);
 * no Xen code is copied. Why C and not a Rust cdylib: the interposed libc entry points `open`
 * and `open64` are variadic, the library definitions must be unversioned plain C symbols, and
 * the file needs nothing but the machine's gcc (no second Cargo artefact for run.sh).
 *
 * Environment:
 *   XS_SHIM_RUNDIR   the simulation run directory (domains/<domid>/{ring,to-server,to-guest},
 *                    dom-exc, plus the fake /proc/xen/xsd_port and xsd_kva files it creates)
 *   XS_SHIM_SOCKET   where a bind() to /var/run/xenstored/socket really goes (oxenstored's
 *                    socket path is compiled in)
 *
 * Mapping (event channels are FIFOs carrying the guest's port number, grant maps are mmaps of
 * the 4096-byte ring file):
 *   xengnttab_map_grant_ref(domid, 1), xc_map_foreign_range(domid)  -> mmap domains/N/ring
 *   xenevtchn_bind_interdomain(domid, P)  -> a local port; its to-server FIFO joins the epoll set
 *   xenevtchn_bind_virq(VIRQ_DOM_EXC)     -> a local port for the dom-exc FIFO
 *   xenevtchn_fd()                        -> the epoll descriptor over all those FIFOs
 *   xenevtchn_pending()                   -> the local port whose FIFO is readable (drained)
 *   xenevtchn_notify(local)               -> write P to domains/N/to-guest
 *   xc_domain_getinfo / getinfolist       -> every domid exists; dying/shutdown from markers
 *   open("/proc/xen/xsd_port"|"xsd_kva")  -> $XS_SHIM_RUNDIR/xsd_port | xsd_kva (dom0's ring,
 *                                            which nobody drives: dom0 uses the socket)
 *   setrlimit(RLIMIT_NOFILE, n)           -> clamped to the hard limit (oxenstored asks for
 *                                            fs.nr_open, which needs CAP_SYS_RESOURCE)
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define PAGE_SIZE_BYTES 4096
#define MAX_LOCAL_PORTS 16384
#define FAKE_DOM0_PORT 1

struct channel {
    int used;
    uint32_t domid;
    uint32_t remote_port;
    int to_server_fd; /* readable = the guest notified; -1 for dom0 and unbound ports */
    int to_guest_fd;
};

static struct channel channels[MAX_LOCAL_PORTS];
static int epoll_descriptor = -1;
/* Any non-NULL pointer works as a handle: the peers only pass it back. */
static int fake_handle;

static const char *run_directory(void)
{
    const char *directory = getenv("XS_SHIM_RUNDIR");
    return directory ? directory : "/tmp/xs-shim";
}

static void domain_file(char *buffer, size_t size, uint32_t domid, const char *name)
{
    snprintf(buffer, size, "%s/domains/%u/%s", run_directory(), domid, name);
}

static int (*real_open_function(void))(const char *, int, ...)
{
    static int (*real_open)(const char *, int, ...);
    if (!real_open)
        real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    return real_open;
}

/* Creates the fake /proc/xen files once: dom0's port (no newline: oxenstored parses it as is)
 * and a zeroed page for dom0's ring. */
static void create_proc_xen_files(void)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/xsd_port", run_directory());
    int descriptor = real_open_function()(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (descriptor >= 0) {
        char text[16];
        int length = snprintf(text, sizeof(text), "%d", FAKE_DOM0_PORT);
        if (write(descriptor, text, (size_t)length) != length)
            perror("fake-xen: xsd_port");
        close(descriptor);
    }
    snprintf(path, sizeof(path), "%s/xsd_kva", run_directory());
    descriptor = real_open_function()(path, O_RDWR | O_CREAT, 0600);
    if (descriptor >= 0) {
        if (ftruncate(descriptor, PAGE_SIZE_BYTES) != 0)
            perror("fake-xen: xsd_kva");
        close(descriptor);
    }
}

__attribute__((constructor)) static void fake_xen_initialise(void)
{
    mkdir(run_directory(), 0700);
    create_proc_xen_files();
}

static const char *redirected_path(const char *path, char *buffer, size_t size)
{
    if (path && strcmp(path, "/proc/xen/xsd_port") == 0) {
        snprintf(buffer, size, "%s/xsd_port", run_directory());
        return buffer;
    }
    if (path && strcmp(path, "/proc/xen/xsd_kva") == 0) {
        snprintf(buffer, size, "%s/xsd_kva", run_directory());
        return buffer;
    }
    return path;
}

int open(const char *path, int flags, ...)
{
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list arguments;
        va_start(arguments, flags);
        mode = va_arg(arguments, mode_t);
        va_end(arguments);
    }
    char buffer[4096];
    return real_open_function()(redirected_path(path, buffer, sizeof(buffer)), flags, mode);
}

/* On 64-bit Linux open64() is open(): the same function under both names. */
int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int setrlimit(__rlimit_resource_t resource, const struct rlimit *limit)
{
    static int (*real_setrlimit)(__rlimit_resource_t, const struct rlimit *);
    if (!real_setrlimit)
        real_setrlimit = (int (*)(__rlimit_resource_t, const struct rlimit *))dlsym(RTLD_NEXT, "setrlimit");
    int result = real_setrlimit(resource, limit);
    if (result != 0 && errno == EPERM && resource == RLIMIT_NOFILE) {
        struct rlimit current;
        getrlimit(RLIMIT_NOFILE, &current);
        current.rlim_cur = current.rlim_max;
        result = real_setrlimit(resource, &current);
    }
    return result;
}

int bind(int socket_descriptor, const struct sockaddr *address, socklen_t length)
{
    static int (*real_bind)(int, const struct sockaddr *, socklen_t);
    if (!real_bind)
        real_bind = (int (*)(int, const struct sockaddr *, socklen_t))dlsym(RTLD_NEXT, "bind");
    const char *socket_path = getenv("XS_SHIM_SOCKET");
    if (socket_path && address && address->sa_family == AF_UNIX) {
        const struct sockaddr_un *unix_address = (const struct sockaddr_un *)address;
        if (strstr(unix_address->sun_path, "xenstored/socket")) {
            struct sockaddr_un replacement;
            memset(&replacement, 0, sizeof(replacement));
            replacement.sun_family = AF_UNIX;
            snprintf(replacement.sun_path, sizeof(replacement.sun_path), "%s", socket_path);
            unlink(replacement.sun_path);
            return real_bind(socket_descriptor, (const struct sockaddr *)&replacement,
                             sizeof(replacement));
        }
    }
    return real_bind(socket_descriptor, address, length);
}

/* ---- libxenevtchn ---- */

static int open_fifo(const char *path)
{
    /* Read-write and non-blocking, as the convention says: no open blocks, no end-of-file. */
    return real_open_function()(path, O_RDWR | O_NONBLOCK | O_CLOEXEC);
}

static int allocate_port(uint32_t domid, uint32_t remote_port, int to_server_fd, int to_guest_fd)
{
    for (int port = 1; port < MAX_LOCAL_PORTS; port++) {
        if (port == FAKE_DOM0_PORT && domid != 0)
            continue;
        if (!channels[port].used) {
            channels[port] = (struct channel){1, domid, remote_port, to_server_fd, to_guest_fd};
            if (to_server_fd >= 0) {
                struct epoll_event event = {.events = EPOLLIN, .data.u32 = (uint32_t)port};
                epoll_ctl(epoll_descriptor, EPOLL_CTL_ADD, to_server_fd, &event);
            }
            return port;
        }
    }
    errno = ENOSPC;
    return -1;
}

/* The libraries' close calls: the handles are one static object, there is nothing to free. */
static int close_fake_handle(void *handle)
{
    (void)handle;
    return 0;
}

static void *open_event_channel_handle(void)
{
    if (epoll_descriptor < 0)
        epoll_descriptor = epoll_create1(EPOLL_CLOEXEC);
    return &fake_handle;
}

void *xenevtchn_open(void *logger, unsigned int flags)
{
    (void)logger;
    (void)flags;
    return open_event_channel_handle();
}

void *xenevtchn_fdopen(void *logger, int fd, unsigned int flags)
{
    (void)logger;
    (void)fd;
    (void)flags;
    return open_event_channel_handle();
}

int xenevtchn_close(void *handle) __attribute__((alias("close_fake_handle")));

int xenevtchn_fd(void *handle)
{
    (void)handle;
    return epoll_descriptor;
}

int xenevtchn_bind_virq(void *handle, unsigned int virq)
{
    (void)handle;
    (void)virq; /* only VIRQ_DOM_EXC is ever bound */
    char path[4096];
    snprintf(path, sizeof(path), "%s/dom-exc", run_directory());
    mkfifo(path, 0600);
    return allocate_port(0x7FF0, 0, open_fifo(path), -1);
}

int xenevtchn_bind_interdomain(void *handle, uint32_t domid, uint32_t remote_port)
{
    (void)handle;
    if (domid == 0)
        /* dom0 talks through the socket; its fake ring has no FIFOs. */
        return FAKE_DOM0_PORT;
    char path[4096];
    domain_file(path, sizeof(path), domid, "to-server");
    int to_server_fd = open_fifo(path);
    domain_file(path, sizeof(path), domid, "to-guest");
    int to_guest_fd = open_fifo(path);
    return allocate_port(domid, remote_port, to_server_fd, to_guest_fd);
}

int xenevtchn_bind_unbound_port(void *handle, uint32_t domid)
{
    (void)handle;
    return allocate_port(domid, 0, -1, -1);
}

int xenevtchn_notify(void *handle, int port)
{
    (void)handle;
    if (port > 0 && port < MAX_LOCAL_PORTS && channels[port].used && channels[port].to_guest_fd >= 0) {
        uint32_t value = channels[port].remote_port; /* little-endian host */
        /* A full pipe already holds a pending notification: EAGAIN is fine. */
        if (write(channels[port].to_guest_fd, &value, sizeof(value)) < 0 && errno != EAGAIN)
            return -1;
    }
    return 0;
}

int xenevtchn_unbind(void *handle, int port)
{
    (void)handle;
    if (port <= 0 || port >= MAX_LOCAL_PORTS || !channels[port].used || port == FAKE_DOM0_PORT)
        return 0;
    if (channels[port].to_server_fd >= 0) {
        epoll_ctl(epoll_descriptor, EPOLL_CTL_DEL, channels[port].to_server_fd, NULL);
        close(channels[port].to_server_fd);
    }
    if (channels[port].to_guest_fd >= 0)
        close(channels[port].to_guest_fd);
    memset(&channels[port], 0, sizeof(channels[port]));
    return 0;
}

int xenevtchn_unmask(void *handle, int port)
{
    (void)handle;
    (void)port;
    return 0;
}

int xenevtchn_pending(void *handle)
{
    (void)handle;
    struct epoll_event event;
    /* The peers call this only once the epoll descriptor polled readable; level-triggered
     * epoll rotates ready FIFOs, so busy guests are served in turn. */
    int count = epoll_wait(epoll_descriptor, &event, 1, 0);
    if (count <= 0) {
        errno = EAGAIN;
        return -1;
    }
    int port = (int)event.data.u32;
    if (port > 0 && port < MAX_LOCAL_PORTS && channels[port].to_server_fd >= 0) {
        char buffer[4096];
        while (read(channels[port].to_server_fd, buffer, sizeof(buffer)) > 0) {
        }
    }
    return port;
}

/* ---- libxengnttab and foreign mapping ---- */

static void *map_ring_file(uint32_t domid)
{
    char path[4096];
    domain_file(path, sizeof(path), domid, "ring");
    int descriptor = real_open_function()(path, O_RDWR | O_CLOEXEC);
    if (descriptor < 0)
        return NULL;
    void *page = mmap(NULL, PAGE_SIZE_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, descriptor, 0);
    close(descriptor);
    return page == MAP_FAILED ? NULL : page;
}

void *xengnttab_open(void *logger, unsigned int flags)
{
    (void)logger;
    (void)flags;
    return &fake_handle;
}

int xengnttab_close(void *handle) __attribute__((alias("close_fake_handle")));

int xengnttab_set_max_grants(void *handle, uint32_t count)
{
    (void)handle;
    (void)count;
    return 0;
}

void *xengnttab_map_grant_ref(void *handle, uint32_t domid, uint32_t reference, int prot)
{
    (void)handle;
    (void)reference;
    (void)prot;
    return map_ring_file(domid);
}

int xengnttab_unmap(void *handle, void *start_address, uint32_t count)
{
    (void)handle;
    return munmap(start_address, (size_t)count * PAGE_SIZE_BYTES);
}

/* ---- libxenctrl ---- */

void *xc_interface_open(void *logger, void *dombuild_logger, unsigned int flags)
{
    (void)logger;
    (void)dombuild_logger;
    (void)flags;
    return &fake_handle;
}

int xc_interface_close(void *handle) __attribute__((alias("close_fake_handle")));

static int marker_exists(uint32_t domid, const char *name)
{
    char path[4096];
    domain_file(path, sizeof(path), domid, name);
    return access(path, F_OK) == 0;
}

/* The dying (bit 0) and shutdown (bit 2) flags of both info structs, from the markers. */
static uint32_t state_flags(uint32_t domid)
{
    return (marker_exists(domid, "dead") ? 1u : 0u) | (marker_exists(domid, "shutdown") ? 4u : 0u);
}

/* xc_dominfo_t starts with: uint32_t domid; uint32_t ssidref; then a word of bit fields
 * (dying:1, crashed:1, shutdown:1, ...). Only those are written: the caller's struct is larger. */
int xc_domain_getinfo(void *handle, uint32_t first_domid, unsigned int max_domains, void *info)
{
    (void)handle;
    if (max_domains == 0 || first_domid >= 0x7FF0)
        return 0;
    uint32_t *words = info;
    words[0] = first_domid;
    words[1] = 0;
    words[2] = state_flags(first_domid);
    return 1;
}

/* xc_domaininfo_t (struct xen_domctl_getdomaininfo) starts with: uint16_t domain; uint16_t pad;
 * uint32_t flags (XEN_DOMINF_dying = bit 0, XEN_DOMINF_shutdown = bit 2). */
int xc_domain_getinfolist(void *handle, uint32_t first_domain, unsigned int max_domains, void *info)
{
    (void)handle;
    if (max_domains == 0 || first_domain >= 0x7FF0)
        return 0;
    uint16_t *halves = info;
    halves[0] = (uint16_t)first_domain;
    halves[1] = 0;
    uint32_t *words = info;
    words[1] = state_flags(first_domain);
    return 1;
}

void *xc_map_foreign_range(void *handle, uint32_t domid, int size, int prot, unsigned long frame)
{
    (void)handle;
    (void)size;
    (void)prot;
    (void)frame;
    return map_ring_file(domid);
}
