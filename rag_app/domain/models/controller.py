from litestar import Controller


class LlmController(Controller):
    path = "/llms"


class ApiKeyController(Controller):
    path = "/apikeys"
