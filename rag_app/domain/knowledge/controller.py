from litestar import Controller


class KnowledgeController(Controller):
    path = "/knowledge"
