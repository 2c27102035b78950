"""HTTP serving: the app factory, middlewares, the endpoint of each client API (bound to its
adapter), the admin sub-app, delivery of answers (choose, then pump), live streams, AppKeys.

May import every other layer; nothing imports it except `relay.__main__` and `relay.demo`.
"""
