/*
 * gilmod: a tiny extension module that has NOT declared that it can run
 * without the GIL (single-phase init with PyModule_Create, no Py_mod_gil
 * slot, no PyUnstable_Module_SetGIL call). Importing it into a
 * free-threaded CPython (3.13t and later) switches the GIL on, with the
 * RuntimeWarning "The global interpreter lock (GIL) has been enabled to load
 * module 'gilmod', ...". Tests build it against the interpreter under test:
 *
 *   cc -shared -fPIC -I"$(python -c 'import sysconfig; print(sysconfig.get_paths()["include"])')" \
 *      gilmod.c -o "gilmod$(python -c 'import sysconfig; print(sysconfig.get_config_var("EXT_SUFFIX"))')"
 *
 * (pyworker/python/tests/gilext.py does this.) On a build with a GIL the
 * module is harmless.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

static PyObject *
gilmod_answer(PyObject *self, PyObject *unused)
{
    return PyLong_FromLong(42);
}

static PyMethodDef gilmod_methods[] = {
    {"answer", gilmod_answer, METH_NOARGS, "Return 42."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef gilmod_module = {
    PyModuleDef_HEAD_INIT,
    "gilmod",
    "A module that needs the GIL (it never says otherwise).",
    -1,
    gilmod_methods,
};

PyMODINIT_FUNC
PyInit_gilmod(void)
{
    return PyModule_Create(&gilmod_module);
}
