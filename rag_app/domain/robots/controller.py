from litestar import Controller


class RobotController(Controller):
    path = "/robots"
