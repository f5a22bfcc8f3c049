"""mango.flows"""
