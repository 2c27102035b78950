"""HTTP serving: the app factory, middlewares, routes, delivery of answers, live streams, AppKeys.

May import every other layer; nothing imports it except `relay.__main__` and `relay.demo`.
"""
