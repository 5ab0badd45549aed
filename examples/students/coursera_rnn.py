"""A student's Coursera Deep Learning Specialization (course 5, week 1) RNN: rnn_forward and
rnn_backward, column vectors, x n_x×m×T_x, a n_a×m×T_x, parameters Wax, Waa, Wya, ba, by.

It has one bug, marked below: each step gets da[:, :, t] alone, without the gradient
da_prevt coming back from step t + 1 (no backpropagation through time: the grader names it
no_bptt)."""
import numpy as np


def softmax(x):
    e = np.exp(x - np.max(x, axis=0))
    return e / e.sum(axis=0)


def rnn_cell_forward(xt, a_prev, parameters):
    Wax, Waa, Wya, ba, by = (parameters[k] for k in ("Wax", "Waa", "Wya", "ba", "by"))
    a_next = np.tanh(Waa @ a_prev + Wax @ xt + ba)
    yt_pred = softmax(Wya @ a_next + by)
    return a_next, yt_pred, (a_next, a_prev, xt, parameters)


def rnn_forward(x, a0, parameters):
    n_x, m, T_x = x.shape
    n_y, n_a = parameters["Wya"].shape
    a, y_pred = np.zeros((n_a, m, T_x)), np.zeros((n_y, m, T_x))
    a_next, caches = a0, []
    for t in range(T_x):
        a_next, yt_pred, cache = rnn_cell_forward(x[:, :, t], a_next, parameters)
        a[:, :, t], y_pred[:, :, t] = a_next, yt_pred
        caches.append(cache)
    return a, y_pred, (caches, x)


def rnn_cell_backward(da_next, cache):
    a_next, a_prev, xt, parameters = cache
    dtanh = (1 - a_next ** 2) * da_next
    return {"dxt": parameters["Wax"].T @ dtanh, "da_prev": parameters["Waa"].T @ dtanh,
            "dWax": dtanh @ xt.T, "dWaa": dtanh @ a_prev.T, "dba": dtanh.sum(axis=1, keepdims=True)}


def rnn_backward(da, caches):
    caches, x = caches
    n_a, m, T_x = da.shape
    n_x = x.shape[0]
    a1, a0, x1, parameters = caches[0]
    dx, dWax, dWaa = np.zeros((n_x, m, T_x)), np.zeros((n_a, n_x)), np.zeros((n_a, n_a))
    dba, da_prevt = np.zeros((n_a, 1)), np.zeros((n_a, m))
    for t in reversed(range(T_x)):
        gradients = rnn_cell_backward(da[:, :, t], caches[t])    # BUG: should be da[:, :, t] + da_prevt
        dx[:, :, t], da_prevt = gradients["dxt"], gradients["da_prev"]
        dWax += gradients["dWax"]
        dWaa += gradients["dWaa"]
        dba += gradients["dba"]
    return {"dx": dx, "da0": da_prevt, "dWax": dWax, "dWaa": dWaa, "dba": dba}
