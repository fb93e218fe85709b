"""placeholder"""
def specs(repo):
    return []
