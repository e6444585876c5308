/**
 * @file fcrest/version.h
 * @brief The fcrest version, at compile time and at run time.
 *
 * The macros give the version of the headers a program was compiled against; fcr_version() and
 * fcr_version_number() give the version of the library it runs with. fcrest follows semantic
 * versioning: within one major version (and, before 1.0, within one minor version) a program
 * built against older headers runs with a newer library.
 */
#ifndef FCREST_VERSION_H
#define FCREST_VERSION_H

#ifdef __cplusplus
extern "C" {
#endif

/** Major version of these headers. */
#define FCR_VERSION_MAJOR 0
/** Minor version of these headers. */
#define FCR_VERSION_MINOR 9
/** Patch version of these headers. */
#define FCR_VERSION_PATCH 0
/** Version of these headers as a string, "MAJOR.MINOR.PATCH". */
#define FCR_VERSION_STRING "0.9.0"
/** Version of these headers as one comparable number: MAJOR * 10000 + MINOR * 100 + PATCH. */
#define FCR_VERSION_NUMBER (FCR_VERSION_MAJOR * 10000 + FCR_VERSION_MINOR * 100 + FCR_VERSION_PATCH)

/**
 * Returns the version of the running library as "MAJOR.MINOR.PATCH", for example "0.9.0".
 * The string is static and owned by the library; the caller must not free or change it. Never
 * fails.
 */
const char *fcr_version(void);

/**
 * Returns the version of the running library as MAJOR * 10000 + MINOR * 100 + PATCH, to compare
 * with FCR_VERSION_NUMBER (for example, to refuse to start when the library is older than the
 * headers). Never fails.
 */
int fcr_version_number(void);

#ifdef __cplusplus
}
#endif

#endif
