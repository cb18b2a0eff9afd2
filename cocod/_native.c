/* cocod's compiled part: the stat() walk's inner loops (with the GIL released) and the
 * comparison of a listing with the tracking. Both run once per file in every full pass.
 *
 * Why: a full pass of a LocalFile source must stat every file, and in Python each file
 * costs a DirEntry, a stat_result and a few attribute lookups on top of the system calls:
 * about 2.6 us a file, against about 1.2 us of system time (measured on a 2-core VM at
 * 50,000 files). Here a folder is read and its files are stat'ed without the GIL, so two
 * walker threads really run on two cores, and Python only sees the names and ordinals it
 * keeps. cocod/executors/native_walk.py and cocod/storage/listing_state.py use it when it
 * was built and fall back to Python when it was not (the extension is optional at install
 * time).
 *
 * Two functions, so the walk's filters (patterns, .gitignore) stay in Python:
 *
 *   list_folder(path, suffixes, prefix=None, out=None) -> (fd, folders, files, links)
 *       Opens the folder (the caller closes fd) and reads its entries. ``files`` are the
 *       regular files, ``links`` the symlinks, both only those whose name ends with one of
 *       ``suffixes`` (a tuple of bytes; None keeps every name). ``folders`` are all
 *       sub-folders. Entries the file system does not type (DT_UNKNOWN) are lstat'ed.
 *       With ``out`` (a dict), the files are stat'ed in the same pass as by stat_files
 *       below and ``files`` comes back empty: one call per folder, each name decoded once.
 *
 *   stat_files(fd, prefix, names, out)
 *       fstatat()s each name in the open folder (not following symlinks) and sets
 *       out[prefix + name] = (st_mtime_ns, st_size) for each that is still a regular file;
 *       names that vanished or changed kind since the listing are left out.
 *
 *   diff_listing(keys, mtimes, sizes, listed) -> (changed, gone)
 *       cocod/storage/listing_state.py's TrackedListing.diff: the tracked keys (UTF-8 bytes,
 *       decoded with surrogateescape), their mtimes (an int, or None for "always differs")
 *       and sizes, against the listing {key: (mtime_ns, size)}. ``changed``: listed keys
 *       whose ordinal differs, then listed keys not tracked (in listing order); ``gone``:
 *       tracked keys not listed. ``listed`` is not modified.
 *
 * Names are decoded as os.scandir decodes them (the file system encoding with
 * surrogateescape), so keys match the Python walk's byte for byte.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

enum kind { KIND_SKIP = 0, KIND_DIR = 1, KIND_FILE = 2, KIND_LINK = 3 };

typedef struct {
    size_t offset; /* into the name buffer */
    size_t len;
    unsigned char kind;
    unsigned char stated; /* a regular file whose ordinal below is set */
    long long mtime_ns, size;
} entry_t;

typedef struct {
    char *names;
    size_t names_len, names_cap;
    entry_t *entries;
    size_t count, cap;
} listing_t;

static void listing_free(listing_t *l) {
    free(l->names);
    free(l->entries);
}

static int listing_add(listing_t *l, const char *name, size_t len, unsigned char kind) {
    if (l->names_len + len + 1 > l->names_cap) {
        size_t cap = l->names_cap ? l->names_cap * 2 : 4096;
        while (cap < l->names_len + len + 1) cap *= 2;
        char *p = realloc(l->names, cap);
        if (!p) return -1;
        l->names = p;
        l->names_cap = cap;
    }
    if (l->count == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        entry_t *p = realloc(l->entries, cap * sizeof(entry_t));
        if (!p) return -1;
        l->entries = p;
        l->cap = cap;
    }
    memcpy(l->names + l->names_len, name, len + 1);
    l->entries[l->count].offset = l->names_len;
    l->entries[l->count].len = len;
    l->entries[l->count].kind = kind;
    l->entries[l->count].stated = 0;
    l->names_len += len + 1;
    l->count++;
    return 0;
}

typedef struct {
    const char **data;
    size_t *lens;
    Py_ssize_t count;
} suffixes_t;

static int ends_with_any(const char *name, size_t len, const suffixes_t *s) {
    if (s->count < 0) return 1; /* no filter */
    for (Py_ssize_t i = 0; i < s->count; i++) {
        size_t n = s->lens[i];
        if (n <= len && memcmp(name + len - n, s->data[i], n) == 0) return 1;
    }
    return 0;
}

/* Reads every entry of the open folder ``fd`` (which it takes over: closedir closes a
 * dup). Runs without the GIL. Returns 0, or an errno value. */
static int read_entries(int fd, const suffixes_t *suffixes, listing_t *out) {
    int dup_fd = dup(fd);
    if (dup_fd < 0) return errno;
    DIR *dir = fdopendir(dup_fd);
    if (!dir) {
        int e = errno;
        close(dup_fd);
        return e;
    }
    int err = 0;
    for (;;) {
        errno = 0;
        struct dirent *d = readdir(dir);
        if (!d) {
            err = errno;
            break;
        }
        const char *name = d->d_name;
        if (name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0))) continue;
        size_t len = strlen(name);
        unsigned char kind = KIND_SKIP;
        unsigned char type = d->d_type;
        if (type == DT_UNKNOWN) {
            struct stat st;
            if (fstatat(fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue; /* vanished */
            type = S_ISDIR(st.st_mode) ? DT_DIR : S_ISREG(st.st_mode) ? DT_REG
                   : S_ISLNK(st.st_mode) ? DT_LNK : DT_UNKNOWN;
        }
        if (type == DT_DIR) {
            kind = KIND_DIR;
        } else if (type == DT_REG || type == DT_LNK) {
            if (!ends_with_any(name, len, suffixes)) continue;
            kind = type == DT_REG ? KIND_FILE : KIND_LINK;
        } else {
            continue; /* a FIFO, socket or device */
        }
        if (listing_add(out, name, len, kind) != 0) {
            err = ENOMEM;
            break;
        }
    }
    closedir(dir);
    return err;
}

/* Stats the listed regular files in the open folder. Runs without the GIL. */
static void stat_entries(int fd, listing_t *l) {
    for (size_t i = 0; i < l->count; i++) {
        entry_t *e = &l->entries[i];
        struct stat st;
        if (e->kind != KIND_FILE) continue;
        if (fstatat(fd, l->names + e->offset, &st, AT_SYMLINK_NOFOLLOW) == 0 &&
            S_ISREG(st.st_mode)) {
            e->mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
            e->size = (long long)st.st_size;
            e->stated = 1;
        }
    }
}

/* out[prefix + name] = (mtime_ns, size) for each stated entry; 0, or -1 with an error. */
static int store_ordinals(const listing_t *l, PyObject *prefix_bytes, PyObject *out) {
    const char *prefix = PyBytes_AS_STRING(prefix_bytes);
    size_t plen = (size_t)PyBytes_GET_SIZE(prefix_bytes);
    size_t cap = plen + 256;
    char *key = PyMem_Malloc(cap);
    if (!key) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(key, prefix, plen);
    int rc = 0;
    for (size_t i = 0; i < l->count && rc == 0; i++) {
        const entry_t *e = &l->entries[i];
        if (!e->stated) continue;
        if (plen + e->len > cap) {
            cap = plen + e->len;
            char *p = PyMem_Realloc(key, cap);
            if (!p) {
                PyErr_NoMemory();
                rc = -1;
                break;
            }
            key = p;
        }
        memcpy(key + plen, l->names + e->offset, e->len);
        PyObject *k = PyUnicode_DecodeFSDefaultAndSize(key, (Py_ssize_t)(plen + e->len));
        PyObject *v = k ? Py_BuildValue("(LL)", e->mtime_ns, e->size) : NULL;
        rc = v ? PyDict_SetItem(out, k, v) : -1;
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    PyMem_Free(key);
    return rc;
}

static PyObject *list_folder(PyObject *self, PyObject *args) {
    PyObject *path_bytes = NULL, *suffix_obj, *prefix_obj = Py_None, *out = Py_None;
    PyObject *prefix_bytes = NULL;
    if (!PyArg_ParseTuple(args, "O&O|OO:list_folder", PyUnicode_FSConverter, &path_bytes,
                          &suffix_obj, &prefix_obj, &out))
        return NULL;
    suffixes_t suffixes = {NULL, NULL, -1};
    PyObject *result = NULL;
    listing_t listing = {0};
    int with_stat = out != Py_None;
    if (with_stat) {
        if (!PyDict_Check(out) || !PyUnicode_Check(prefix_obj)) {
            PyErr_SetString(PyExc_TypeError, "out must be a dict, with prefix a str");
            goto done;
        }
        prefix_bytes = PyUnicode_EncodeFSDefault(prefix_obj);
        if (!prefix_bytes) goto done;
    }
    if (suffix_obj != Py_None) {
        if (!PyTuple_Check(suffix_obj)) {
            PyErr_SetString(PyExc_TypeError, "suffixes must be a tuple of bytes or None");
            goto done;
        }
        suffixes.count = PyTuple_GET_SIZE(suffix_obj);
        suffixes.data = PyMem_Calloc(suffixes.count + 1, sizeof(char *));
        suffixes.lens = PyMem_Calloc(suffixes.count + 1, sizeof(size_t));
        if (!suffixes.data || !suffixes.lens) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < suffixes.count; i++) {
            PyObject *item = PyTuple_GET_ITEM(suffix_obj, i);
            if (!PyBytes_Check(item)) {
                PyErr_SetString(PyExc_TypeError, "suffixes must be a tuple of bytes or None");
                goto done;
            }
            suffixes.data[i] = PyBytes_AS_STRING(item);
            suffixes.lens[i] = (size_t)PyBytes_GET_SIZE(item);
        }
    }
    const char *path = PyBytes_AS_STRING(path_bytes);
    int fd, err = 0;
    Py_BEGIN_ALLOW_THREADS
    fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) {
        err = errno;
    } else {
        err = read_entries(fd, &suffixes, &listing);
        if (err)
            close(fd);
        else if (with_stat)
            stat_entries(fd, &listing);
    }
    Py_END_ALLOW_THREADS
    if (err) {
        errno = err;
        PyObject *name = PyUnicode_DecodeFSDefault(path);
        if (name) {
            PyErr_SetFromErrnoWithFilenameObject(PyExc_OSError, name);
            Py_DECREF(name);
        }
        goto done;
    }
    PyObject *lists[4] = {NULL, PyList_New(0), PyList_New(0), PyList_New(0)};
    if (!lists[1] || !lists[2] || !lists[3]) goto fail;
    if (with_stat && store_ordinals(&listing, prefix_bytes, out) != 0) goto fail;
    for (size_t i = 0; i < listing.count; i++) {
        entry_t *e = &listing.entries[i];
        if (with_stat && e->kind == KIND_FILE) continue; /* stored in out */
        PyObject *name =
            PyUnicode_DecodeFSDefaultAndSize(listing.names + e->offset, (Py_ssize_t)e->len);
        if (!name) goto fail;
        int rc = PyList_Append(lists[e->kind], name);
        Py_DECREF(name);
        if (rc != 0) goto fail;
    }
    result = Py_BuildValue("(iNNN)", fd, lists[1], lists[2], lists[3]);
    if (!result) close(fd);
    goto done;
fail:
    close(fd);
    Py_XDECREF(lists[1]);
    Py_XDECREF(lists[2]);
    Py_XDECREF(lists[3]);
done:
    listing_free(&listing);
    PyMem_Free(suffixes.data);
    PyMem_Free(suffixes.lens);
    Py_XDECREF(path_bytes);
    Py_XDECREF(prefix_bytes);
    return result;
}

typedef struct {
    long long mtime_ns;
    long long size;
    int ok;
} stat_row_t;

static PyObject *stat_files(PyObject *self, PyObject *args) {
    int fd;
    PyObject *prefix, *names, *out;
    if (!PyArg_ParseTuple(args, "iUO!O!:stat_files", &fd, &prefix, &PyList_Type, &names,
                          &PyDict_Type, &out))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(names);
    if (n == 0) Py_RETURN_NONE;
    PyObject **encoded = PyMem_Calloc((size_t)n, sizeof(PyObject *));
    const char **raw = PyMem_Calloc((size_t)n, sizeof(char *));
    stat_row_t *rows = PyMem_Calloc((size_t)n, sizeof(stat_row_t));
    PyObject *result = NULL;
    Py_ssize_t i;
    if (!encoded || !raw || !rows) {
        PyErr_NoMemory();
        goto done;
    }
    for (i = 0; i < n; i++) {
        PyObject *name = PyList_GET_ITEM(names, i);
        if (!PyUnicode_Check(name)) {
            PyErr_SetString(PyExc_TypeError, "names must be a list of str");
            goto done;
        }
        encoded[i] = PyUnicode_EncodeFSDefault(name);
        if (!encoded[i]) goto done;
        raw[i] = PyBytes_AS_STRING(encoded[i]);
    }
    Py_BEGIN_ALLOW_THREADS
    for (Py_ssize_t j = 0; j < n; j++) {
        struct stat st;
        if (fstatat(fd, raw[j], &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode)) {
            rows[j].mtime_ns = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
            rows[j].size = (long long)st.st_size;
            rows[j].ok = 1;
        }
    }
    Py_END_ALLOW_THREADS
    for (i = 0; i < n; i++) {
        if (!rows[i].ok) continue;
        PyObject *key = PyUnicode_Concat(prefix, PyList_GET_ITEM(names, i));
        if (!key) goto done;
        PyObject *ordinal = Py_BuildValue("(LL)", rows[i].mtime_ns, rows[i].size);
        if (!ordinal) {
            Py_DECREF(key);
            goto done;
        }
        int rc = PyDict_SetItem(out, key, ordinal);
        Py_DECREF(key);
        Py_DECREF(ordinal);
        if (rc != 0) goto done;
    }
    result = Py_None;
    Py_INCREF(result);
done:
    if (encoded) {
        for (i = 0; i < n; i++) Py_XDECREF(encoded[i]);
    }
    PyMem_Free(encoded);
    PyMem_Free(raw);
    PyMem_Free(rows);
    return result;
}

/* 1 when ``ordinal`` (a 2-tuple of ints) equals (mtime, size), 0 when not, -1 on error. */
static int same_ordinal(PyObject *ordinal, PyObject *mtime, PyObject *size) {
    if (mtime == Py_None) return 0;
    if (!PyTuple_Check(ordinal) || PyTuple_GET_SIZE(ordinal) != 2) {
        PyErr_SetString(PyExc_TypeError, "a listed ordinal must be a (mtime_ns, size) tuple");
        return -1;
    }
    int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(ordinal, 0), mtime, Py_EQ);
    if (eq != 1) return eq;
    return PyObject_RichCompareBool(PyTuple_GET_ITEM(ordinal, 1), size, Py_EQ);
}

static PyObject *diff_listing(PyObject *self, PyObject *args) {
    PyObject *keys_obj, *mtimes_obj, *sizes_obj, *listed;
    if (!PyArg_ParseTuple(args, "OOOO!:diff_listing", &keys_obj, &mtimes_obj, &sizes_obj,
                          &PyDict_Type, &listed))
        return NULL;
    PyObject *keys = NULL, *mtimes = NULL, *sizes = NULL, *remaining = NULL;
    PyObject *changed = NULL, *gone = NULL, *result = NULL;
    keys = PySequence_Fast(keys_obj, "keys must be a sequence");
    mtimes = keys ? PySequence_Fast(mtimes_obj, "mtimes must be a sequence") : NULL;
    sizes = mtimes ? PySequence_Fast(sizes_obj, "sizes must be a sequence") : NULL;
    if (!sizes) goto done;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(keys);
    if (PySequence_Fast_GET_SIZE(mtimes) != n || PySequence_Fast_GET_SIZE(sizes) != n) {
        PyErr_SetString(PyExc_ValueError, "tracked listing arrays differ in length");
        goto done;
    }
    remaining = PyDict_Copy(listed);
    changed = PyList_New(0);
    gone = PyList_New(0);
    if (!remaining || !changed || !gone) goto done;
    PyObject **key_items = PySequence_Fast_ITEMS(keys);
    PyObject **mtime_items = PySequence_Fast_ITEMS(mtimes);
    PyObject **size_items = PySequence_Fast_ITEMS(sizes);
    for (Py_ssize_t i = 0; i < n; i++) {
        char *raw;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(key_items[i], &raw, &len) != 0) goto done;
        PyObject *key = PyUnicode_DecodeUTF8(raw, len, "surrogateescape");
        if (!key) goto done;
        PyObject *ordinal = PyDict_GetItemWithError(remaining, key); /* borrowed */
        int rc = 0;
        if (ordinal == NULL) {
            rc = PyErr_Occurred() ? -1 : PyList_Append(gone, key);
        } else {
            Py_INCREF(ordinal);
            int same = same_ordinal(ordinal, mtime_items[i], size_items[i]);
            Py_DECREF(ordinal);
            rc = same < 0 ? -1 : PyDict_DelItem(remaining, key);
            if (rc == 0 && same == 0) rc = PyList_Append(changed, key);
        }
        Py_DECREF(key);
        if (rc != 0) goto done;
    }
    /* What is left was listed but not tracked: new keys, in the listing's order. */
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(remaining, &pos, &key, &value)) {
        if (PyList_Append(changed, key) != 0) goto done;
    }
    result = PyTuple_Pack(2, changed, gone);
done:
    Py_XDECREF(keys);
    Py_XDECREF(mtimes);
    Py_XDECREF(sizes);
    Py_XDECREF(remaining);
    Py_XDECREF(changed);
    Py_XDECREF(gone);
    return result;
}

static PyMethodDef methods[] = {
    {"list_folder", list_folder, METH_VARARGS,
     "list_folder(path, suffixes, prefix=None, out=None) -> (fd, folders, files, links): "
     "read a folder's entries without the GIL (with out, also stat its files into out); "
     "the caller closes fd."},
    {"stat_files", stat_files, METH_VARARGS,
     "stat_files(fd, prefix, names, out): out[prefix + name] = (st_mtime_ns, st_size) for "
     "each name that is a regular file in the open folder fd."},
    {"diff_listing", diff_listing, METH_VARARGS,
     "diff_listing(keys, mtimes, sizes, listed) -> (changed, gone): a listing against the "
     "tracked ordinals (see cocod/storage/listing_state.py)."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_native",
    "cocod's compiled loops: the stat() walk and the listing's comparison with the tracking.",
    -1, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void) { return PyModule_Create(&module); }
