#include <fcrest/error.h>

#include <stdio.h>
#include <strings.h>
#include <unistd.h>

static int log_threshold = FCR_LOG_INFO;

static const char *const level_names[] = {"error", "warn", "info", "debug"};

void fcr_log_set_level(int level)
{
    log_threshold = level;
}

int fcr_log_level(void)
{
    return log_threshold;
}

int fcr_log_level_parse(const char *name, int *level)
{
    for (int i = 0; name && i < (int)(sizeof level_names / sizeof level_names[0]); i++) {
        if (strcasecmp(name, level_names[i]) == 0) {
            *level = i;
            return 0;
        }
    }
    return FCR_EINVAL;
}

void fcr_vlog(int level, const char *fmt, va_list ap)
{
    if (level > log_threshold || level < 0)
        return;
    char line[4096];
    int n = snprintf(line, sizeof line, "fcrest[%ld]: %s: ", (long)getpid(),
                     level_names[level > FCR_LOG_DEBUG ? FCR_LOG_DEBUG : level]);
    if (n < 0)
        return;
    int m = vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    size_t len = (size_t)n + (m < 0 ? 0 : (size_t)m);
    if (len > sizeof line - 1)
        len = sizeof line - 1;
    line[len++] = '\n';
    /* One write(2) per line keeps lines from several workers whole. */
    ssize_t w = write(STDERR_FILENO, line, len);
    (void)w;
}

void fcr_log(int level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fcr_vlog(level, fmt, ap);
    va_end(ap);
}
